//! tests/plugins/caps/caps.c with the Zig SDK: every capability, driven by TCP commands.
const std = @import("std");
const hf = @import("hyperfilter");

const arena = hf.event_allocator; // never fails: it traps when memory runs out

/// The argument after the command, without a line end.
fn argument(data: []const u8, skip: usize) []const u8 {
    return std.mem.trimEnd(u8, if (data.len > skip) data[skip..] else "", "\r\n");
}

pub fn onTcpData(direction: hf.Direction, data: []const u8, end_of_stream: bool) hf.TcpVerdict {
    _ = end_of_stream;
    if (direction != .inbound or data.len == 0) return .forward;
    const starts = struct {
        fn with(bytes: []const u8, prefix: []const u8) bool {
            return std.mem.startsWith(u8, bytes, prefix);
        }
    }.with;
    if (starts(data, "config ")) return .replace(hf.config(argument(data, 7)) orelse "none");
    if (starts(data, "clock")) {
        const wall = hf.now();
        const first = hf.monotonic();
        const second = hf.monotonic();
        return .replace(if (wall > 1600000000 * std.time.ns_per_s and second >= first) "ok" else "bad");
    }
    if (starts(data, "random ")) {
        const count = std.fmt.parseInt(u32, argument(data, 7), 10) catch 0;
        const bytes = hf.randomBytes(count);
        const hex = hf.alloc(bytes.len * 2);
        for (bytes, 0..) |byte, i| {
            hex[2 * i] = "0123456789abcdef"[byte >> 4];
            hex[2 * i + 1] = "0123456789abcdef"[byte & 15];
        }
        return .replace(hex);
    }
    if (starts(data, "count ")) {
        const total = hf.stateIncrement(argument(data, 6), 1, 0) catch return .replace("quota");
        return .replace(std.fmt.allocPrint(arena, "{d}", .{total}) catch unreachable);
    }
    if (starts(data, "get ")) return .replace(hf.stateGet(argument(data, 4)) orelse "none");
    if (starts(data, "set ")) {
        const arg = argument(data, 4);
        const space = std.mem.findScalar(u8, arg, ' ') orelse return .replace("usage");
        hf.stateSet(arg[0..space], arg[space + 1 ..], 0) catch return .replace("quota");
        return .replace("ok");
    }
    if (starts(data, "del ")) {
        hf.stateDelete(argument(data, 4));
        return .replace("ok");
    }
    if (starts(data, "metric")) {
        hf.metricAdd("hits", 1);
        hf.metricSet("level", -7);
        return .replace("ok");
    }
    if (starts(data, "badmetric")) {
        hf.metricAdd("undeclared", 1);
        return .replace("ok");
    }
    if (starts(data, "log")) {
        hf.log(.info, "caps plugin says hello\nforged line");
        return .replace("ok");
    }
    return .forward;
}
