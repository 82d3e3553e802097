//! The root of a Zig plugin's build: exports the hooks plugin.zig declares under the C SDK's
//! names (hyperfilter.c calls them, and forwards where a hook is absent: its defaults are
//! weak). A declaration that looks like a hook but is misspelt or mistyped stops the build.

const std = @import("std");
const hf = @import("hyperfilter");
const plugin = @import("plugin");

fn tcpOpen(info: *const hf.StreamInfo) callconv(.c) hf.TcpVerdict {
    return plugin.onTcpOpen(info);
}

fn tcpData(direction: hf.Direction, data: hf.Bytes, end_of_stream: bool) callconv(.c) hf.TcpVerdict {
    return plugin.onTcpData(direction, data.slice(), end_of_stream);
}

fn tcpClose() callconv(.c) void {
    plugin.onTcpClose();
}

fn httpOpen(info: *const hf.StreamInfo) callconv(.c) hf.HttpVerdict {
    return plugin.onHttpOpen(info);
}

fn httpHeaders(direction: hf.Direction, headers: hf.Fields, end_of_stream: bool) callconv(.c) hf.HttpVerdict {
    return plugin.onHttpHeaders(direction, headers, end_of_stream);
}

fn httpBody(direction: hf.Direction, body: hf.Bytes, end_of_stream: bool) callconv(.c) hf.HttpVerdict {
    return plugin.onHttpBody(direction, body.slice(), end_of_stream);
}

fn httpTrailers(direction: hf.Direction, trailers: hf.Fields) callconv(.c) hf.HttpVerdict {
    return plugin.onHttpTrailers(direction, trailers);
}

/// Each hook: its name in plugin.zig and the type it must have.
const hooks = .{
    .{ "onTcpOpen", fn (*const hf.StreamInfo) hf.TcpVerdict },
    .{ "onTcpData", fn (hf.Direction, []const u8, bool) hf.TcpVerdict },
    .{ "onTcpClose", fn () void },
    .{ "onHttpOpen", fn (*const hf.StreamInfo) hf.HttpVerdict },
    .{ "onHttpHeaders", fn (hf.Direction, hf.Fields, bool) hf.HttpVerdict },
    .{ "onHttpBody", fn (hf.Direction, []const u8, bool) hf.HttpVerdict },
    .{ "onHttpTrailers", fn (hf.Direction, hf.Fields) hf.HttpVerdict },
};

fn declares(comptime name: []const u8) bool {
    return @hasDecl(plugin, name);
}

comptime {
    for (std.meta.declarations(plugin)) |name| {
        if (!std.mem.startsWith(u8, name, "on")) continue;
        for (hooks) |hook| {
            if (std.mem.eql(u8, name, hook[0])) {
                if (@TypeOf(@field(plugin, name)) != hook[1])
                    @compileError("plugin.zig: " ++ name ++ " must be " ++ @typeName(hook[1]));
                break;
            }
        } else @compileError("plugin.zig: " ++ name ++ " is no hook (hyperfilter.zig lists them)");
    }
    if (declares("onTcpOpen")) @export(&tcpOpen, .{ .name = "hf_tcp_open" });
    if (declares("onTcpData")) @export(&tcpData, .{ .name = "hf_tcp_data" });
    if (declares("onTcpClose")) @export(&tcpClose, .{ .name = "hf_tcp_close" });
    if (declares("onHttpOpen")) @export(&httpOpen, .{ .name = "hf_http_open" });
    if (declares("onHttpHeaders")) @export(&httpHeaders, .{ .name = "hf_http_headers" });
    if (declares("onHttpBody")) @export(&httpBody, .{ .name = "hf_http_body" });
    if (declares("onHttpTrailers")) @export(&httpTrailers, .{ .name = "hf_http_trailers" });
}
