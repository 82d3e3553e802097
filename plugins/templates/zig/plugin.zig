//! ${name}: a hyperfilter plugin (a core module built with the bundled Zig).
//! The hooks are in plugins/sdk/zig/hyperfilter.zig; declare only those the manifest's events name.
const std = @import("std");
const hf = @import("hyperfilter");

pub fn onTcpData(direction: hf.Direction, data: []const u8, end_of_stream: bool) hf.TcpVerdict {
    _ = end_of_stream;
    if (direction == .inbound and std.mem.find(u8, data, "forbidden") != null) {
        hf.log(.warn, "closing a connection");
        return .close;
    }
    return .forward;
}

pub fn onHttpHeaders(direction: hf.Direction, headers: hf.Fields, end_of_stream: bool) hf.HttpVerdict {
    _ = end_of_stream;
    if (direction == .inbound and headers.get("x-block") != null)
        return .respond(403, "blocked\n");
    var verdict: hf.HttpVerdict = .forward();
    verdict.setHeader("x-greeting", "hello");
    return verdict;
}
