-- config.rewrite_request / rewrite_response (dataplane.md §4.7).
local u = require("alb.features.util")

local type = type
local pairs = pairs
local ipairs = ipairs
local sub = string.sub
local byte = string.byte
local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local set_header = ngx.req.set_header
local clear_header = ngx.req.clear_header
local get_headers = ngx.req.get_headers
local get_uri_args = ngx.req.get_uri_args
local get_method = ngx.req.get_method

local _M = {}

local function check_vars(m, path)
    if not m then
        return
    end
    for k, v in pairs(m) do
        local list = type(v) == "table" and v or { v }
        for _, name in ipairs(list) do
            if not u.is_ident(name) then
                u.fail(path .. "." .. k, "must name a variable, got " .. name)
            end
        end
    end
end

local function to_list(m)
    if not m then
        return nil
    end
    local out = {}
    for k, v in pairs(m) do
        out[#out + 1] = { k, v }
    end
    table.sort(out, function(a, b) return a[1] < b[1] end)
    return out
end

function _M.compile_request(r, path)
    if not u.is_object(r) then
        u.fail(path, "must be an object")
    end
    local c = {
        set = to_list(u.string_map(r.headers, path .. ".headers", true)),
        set_var = to_list(u.string_map(r.headers_var, path .. ".headers_var", true)),
        remove = u.string_list(r.headers_remove, path .. ".headers_remove"),
        add = to_list(u.list_map(r.headers_add, path .. ".headers_add", true)),
        add_var = to_list(u.list_map(r.headers_add_var, path .. ".headers_add_var", true)),
    }
    for i, h in ipairs(c.remove or {}) do
        u.header_name(h, path .. ".headers_remove[" .. (i - 1) .. "]")
    end
    check_vars(r.headers_var ~= nil and u.is_object(r.headers_var) and r.headers_var or nil, path .. ".headers_var")
    check_vars(r.headers_add_var ~= nil and u.is_object(r.headers_add_var) and r.headers_add_var or nil,
        path .. ".headers_add_var")
    if not (c.set or c.set_var or c.remove or c.add or c.add_var) then
        return nil
    end
    return c
end

function _M.compile_response(r, path)
    if not u.is_object(r) then
        u.fail(path, "must be an object")
    end
    local c = {
        set = to_list(u.string_map(r.headers, path .. ".headers", true)),
        remove = u.string_list(r.headers_remove, path .. ".headers_remove"),
        add = to_list(u.list_map(r.headers_add, path .. ".headers_add", true)),
    }
    for i, h in ipairs(c.remove or {}) do
        u.header_name(h, path .. ".headers_remove[" .. (i - 1) .. "]")
    end
    if not (c.set or c.remove or c.add) then
        return nil
    end
    return c
end

-- value of a variable name of headers_var: any nginx variable, `param_<arg>` (decoded query arg), `method`
local function var(name)
    if name == "method" then
        return get_method()
    end
    if sub(name, 1, 6) == "param_" then
        local v = get_uri_args()[sub(name, 7)]
        if type(v) == "table" then
            v = v[1]
        end
        if v == true then
            v = ""
        end
        return v
    end
    local ok, v = pcall(function() return ngx_var[name] end)
    if not ok then
        return nil
    end
    if v and sub(name, 1, 7) == "cookie_" and #v >= 2 and byte(v, 1) == 34 and byte(v, -1) == 34 then
        v = sub(v, 2, -2)
    end
    return v
end

local function append(name, values)
    local cur = get_headers()[name]
    local out = {}
    if type(cur) == "table" then
        for _, x in ipairs(cur) do out[#out + 1] = x end
    elseif cur then
        out[1] = cur
    end
    for _, x in ipairs(values) do out[#out + 1] = x end
    if #out > 0 then
        set_header(name, out)
    end
end

function _M.request(c)
    if c.set then
        for _, kv in ipairs(c.set) do set_header(kv[1], kv[2]) end
    end
    if c.set_var then
        for _, kv in ipairs(c.set_var) do
            local v = var(kv[2])
            if v then set_header(kv[1], v) end
        end
    end
    if c.remove then
        for _, h in ipairs(c.remove) do clear_header(h) end
    end
    if c.add then
        for _, kv in ipairs(c.add) do append(kv[1], kv[2]) end
    end
    if c.add_var then
        for _, kv in ipairs(c.add_var) do
            local vals = {}
            for _, name in ipairs(kv[2]) do
                local v = var(name)
                if v then vals[#vals + 1] = v end
            end
            append(kv[1], vals)
        end
    end
end

--- header filter
function _M.response(c)
    if c.set then
        for _, kv in ipairs(c.set) do header[kv[1]] = kv[2] end
    end
    if c.remove then
        for _, h in ipairs(c.remove) do
            if header[h] ~= nil then header[h] = nil end
        end
    end
    if c.add then
        for _, kv in ipairs(c.add) do
            local cur = header[kv[1]]
            local out = {}
            if type(cur) == "table" then
                for _, x in ipairs(cur) do out[#out + 1] = x end
            elseif cur then
                out[1] = cur
            end
            for _, x in ipairs(kv[2]) do out[#out + 1] = x end
            header[kv[1]] = out
        end
    end
end

return _M
