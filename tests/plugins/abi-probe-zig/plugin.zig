//! tests/plugins/abi-probe/probe.c with the Zig SDK: every event answered with a verdict
//! built from all of its inputs, the same as the C probe's.
const std = @import("std");
const hf = @import("hyperfilter");

const arena = hf.event_allocator; // never fails: it traps when memory runs out

fn join(info: *const hf.StreamInfo) []const u8 {
    var out: std.ArrayList(u8) = .empty;
    for ([_][]const u8{ info.source_address.slice(), info.destination_address.slice(), info.server_name.slice() }) |part| {
        out.appendSlice(arena, part) catch unreachable;
        out.append(arena, '|') catch unreachable;
    }
    for (info.metadata()) |entry| {
        out.print(arena, "{s}={s};", .{ entry.key.slice(), entry.value.slice() }) catch unreachable;
    }
    return out.items;
}

pub fn onTcpOpen(info: *const hf.StreamInfo) hf.TcpVerdict {
    return .replace(join(info));
}

pub fn onTcpData(direction: hf.Direction, data: []const u8, end_of_stream: bool) hf.TcpVerdict {
    if (std.mem.eql(u8, data, "pass")) return .forward;
    if (std.mem.eql(u8, data, "close")) return .close;
    if (std.mem.eql(u8, data, "reset")) return .reset;
    if (std.mem.eql(u8, data, "answer")) return .answer("answered");
    if (std.mem.eql(u8, data, "bye")) return .answerAndClose("bye\r\n");
    const out = hf.alloc(data.len + 2);
    for (data, 0..) |byte, i| out[data.len - 1 - i] = byte;
    out[data.len] = if (direction == .inbound) '0' else '1';
    out[data.len + 1] = if (end_of_stream) 'E' else '-';
    return .replace(out);
}

pub fn onHttpOpen(info: *const hf.StreamInfo) hf.HttpVerdict {
    var verdict: hf.HttpVerdict = .forward();
    verdict.setHeader("x-info", join(info));
    return verdict;
}

pub fn onHttpHeaders(direction: hf.Direction, headers: hf.Fields, end_of_stream: bool) hf.HttpVerdict {
    var verdict: hf.HttpVerdict = .forward();
    for (headers.items()) |field| {
        const name = field.name.slice();
        if (name.len > 7 and std.mem.startsWith(u8, name, "x-drop-")) {
            verdict.removeHeader(name);
        } else if (name.len == 0 or name[0] != ':') {
            const seen = std.fmt.allocPrint(arena, "x-seen-{s}", .{name}) catch unreachable;
            verdict.setHeader(seen, field.value.slice());
        }
    }
    if (end_of_stream) verdict.setBody(if (direction == .inbound) "in" else "out");
    return verdict;
}

pub fn onHttpBody(direction: hf.Direction, body: []const u8, end_of_stream: bool) hf.HttpVerdict {
    _ = direction;
    if (std.mem.startsWith(u8, body, "respond")) {
        var verdict: hf.HttpVerdict = .respond(418, body[7..]);
        verdict.setHeader("x-teapot", if (end_of_stream) "end" else "more");
        verdict.setHeader("x-empty", "");
        return verdict;
    }
    var verdict: hf.HttpVerdict = .forward();
    if (body.len > 0) verdict.setBody(std.ascii.upperString(hf.alloc(body.len), body));
    return verdict;
}

pub fn onHttpTrailers(direction: hf.Direction, trailers: hf.Fields) hf.HttpVerdict {
    var verdict: hf.HttpVerdict = .forward();
    for (trailers.items()) |field| {
        verdict.setHeader(field.name.slice(), if (direction == .inbound) "req" else "resp");
    }
    return verdict;
}
