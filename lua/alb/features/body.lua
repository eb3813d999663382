-- config.max_body_size (docs/policy.md "Rule config (v1)"): request bodies larger than the limit get 413.
--
-- With a Content-Length the check is one compare, before any body byte is read. Without one (chunked
-- HTTP/1.1, an HTTP/2 body without the header) the body is read first, the way proxying does anyway
-- (proxy_request_buffering: memory up to client_body_buffer_size, then a temp file; never into a Lua string),
-- and nginx's decoded length ($content_length once the body is read) is checked before anything goes upstream.
-- gRPC requests without Content-Length are not checked (their streams must not be buffered).
local u = require("alb.features.util")

local ngx = ngx
local ngx_var = ngx.var
local tonumber = tonumber
local read_body = ngx.req.read_body

local _M = {}

function _M.compile(v, path)
    local n = u.opt_uint(v, path)
    if not n or n == 0 then
        return nil
    end
    return { max = n, reason = "BodyTooLarge : request body larger than " .. n .. " bytes" }
end

--- rewrite phase: answers 413 (and does not return) when the body is larger than allowed
function _M.run(b)
    local cl = ngx_var.http_content_length
    if cl then
        local n = tonumber(cl)
        if n and n > b.max then
            return u.alb_error(413, b.reason)
        end
        return
    end
    if ngx_var.http_transfer_encoding == nil and ngx.req.http_version() < 2 then
        return -- HTTP/1.x without Content-Length or Transfer-Encoding: no body
    end
    local ctx = ngx.ctx
    local rule = ctx.alb_rule
    if (rule and rule.grpc) or ctx.alb_grpc then
        return -- gRPC streams are not buffered (a client stream would stall until its end)
    end
    read_body()
    local n = tonumber(ngx_var.content_length)
    if not n then
        -- nginx did not record the length: measure what was buffered
        local data = ngx.req.get_body_data()
        if data then
            n = #data
        else
            local file = ngx.req.get_body_file()
            local f = file and io.open(file, "rb")
            if f then
                n = f:seek("end")
                f:close()
            end
        end
    end
    if n and n > b.max then
        return u.alb_error(413, b.reason)
    end
end

return _M
