-- Helpers shared by the feature modules: config checks (used by schema validation and by the per-worker
-- compile, which are the same code) and strings with nginx variables.
local cjson = require("cjson")

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local floor = math.floor
local find = string.find
local sub = string.sub
local byte = string.byte
local null = cjson.null
local ngx = ngx
local ngx_var = ngx.var
local escape_uri = ngx.escape_uri

local _M = {}

function _M.absent(v)
    return v == nil or v == null
end
local absent = _M.absent

function _M.is_int(v)
    return type(v) == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

function _M.is_object(t)
    if type(t) ~= "table" then
        return false
    end
    for k in pairs(t) do
        if type(k) ~= "string" then
            return false
        end
    end
    return true
end

function _M.is_array(t)
    if type(t) ~= "table" then
        return false
    end
    local n = #t
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then
            return false
        end
    end
    return true
end

-- raise a validation error (caught by features.compile)
local function fail(path, msg)
    error({ alb_feature_error = path .. " " .. msg }, 0)
end
_M.fail = fail

-- no control characters (a CR/LF would split headers)
local function clean(s)
    return not find(s, "[%z\1-\8\10-\31\127]")
end
_M.clean = clean

function _M.opt_string(v, path)
    if absent(v) then
        return nil
    end
    if type(v) ~= "string" then
        fail(path, "must be a string")
    end
    if not clean(v) then
        fail(path, "must not contain control characters")
    end
    return v
end

function _M.opt_bool(v, path)
    if absent(v) then
        return nil
    end
    if type(v) ~= "boolean" then
        fail(path, "must be a boolean")
    end
    return v
end

function _M.opt_uint(v, path, max)
    if absent(v) then
        return nil
    end
    if not _M.is_int(v) or v < 0 or (max and v > max) then
        fail(path, "must be an integer in 0.." .. tostring(max or "2^53"))
    end
    return v
end

local function header_name(s, path)
    if type(s) ~= "string" or s == "" or find(s, "[^%w!#$%%&'*+%-.^_`|~]") then
        fail(path, "must be a header name, got " .. tostring(s))
    end
    return s
end
_M.header_name = header_name

--- object name -> string value
function _M.string_map(v, path, names_are_headers)
    if absent(v) then
        return nil
    end
    if not _M.is_object(v) then
        fail(path, "must be an object")
    end
    local out, n = {}, 0
    for k, val in pairs(v) do
        if names_are_headers then
            header_name(k, path)
        end
        out[k] = _M.opt_string(val, path .. "." .. k) or fail(path .. "." .. k, "must be a string")
        n = n + 1
    end
    return n > 0 and out or nil
end

function _M.string_list(v, path)
    if absent(v) then
        return nil
    end
    if not _M.is_array(v) then
        fail(path, "must be an array of strings")
    end
    for i, s in ipairs(v) do
        _M.opt_string(s, path .. "[" .. (i - 1) .. "]")
        if type(s) ~= "string" then
            fail(path .. "[" .. (i - 1) .. "]", "must be a string")
        end
    end
    return #v > 0 and v or nil
end

--- object name -> [string]
function _M.list_map(v, path, names_are_headers)
    if absent(v) then
        return nil
    end
    if not _M.is_object(v) then
        fail(path, "must be an object")
    end
    local out, n = {}, 0
    for k, l in pairs(v) do
        if names_are_headers then
            header_name(k, path)
        end
        out[k] = _M.string_list(l, path .. "." .. k) or {}
        n = n + 1
    end
    return n > 0 and out or nil
end

local function is_ident(s)
    return s ~= "" and not find(s, "[^%w_]")
end
_M.is_ident = is_ident

---------------------------------------------------------------------------------------------------------------
-- strings with variables: "http://$host/x?rd=${escaped_request_uri}" -> pieces, resolved per request
---------------------------------------------------------------------------------------------------------------
local function var_value(name)
    if name == "escaped_request_uri" then
        return escape_uri(ngx_var.request_uri or "")
    elseif name == "pass_access_scheme" then
        return ngx_var.scheme
    end
    local ok, v = pcall(function() return ngx_var[name] end)
    if ok and v then
        return v
    end
    return ""
end
_M.var_value = var_value

--- compile a string with `$name` / `${name}` references; nil, err when malformed
function _M.var_string(s, path)
    if type(s) ~= "string" then
        fail(path, "must be a string")
    end
    if not clean(s) then
        fail(path, "must not contain control characters")
    end
    local pieces, has_var = {}, false
    local i, n = 1, #s
    local lit_start = 1
    while i <= n do
        if byte(s, i) == 36 and i < n then -- "$"
            local name, stop
            if byte(s, i + 1) == 123 then -- "{"
                local close = find(s, "}", i + 2, true)
                if not close then
                    fail(path, "has an unclosed ${")
                end
                name, stop = sub(s, i + 2, close - 1), close
                if not is_ident(name) then
                    fail(path, "has an invalid variable name " .. name)
                end
            else
                local a, b = find(s, "^[%w_]+", i + 1)
                if a then
                    name, stop = sub(s, a, b), b
                end
            end
            if name then
                if i > lit_start then
                    pieces[#pieces + 1] = sub(s, lit_start, i - 1)
                end
                pieces[#pieces + 1] = { name }
                has_var = true
                i = stop + 1
                lit_start = i
            else
                i = i + 1
            end
        else
            i = i + 1
        end
    end
    if lit_start <= n then
        pieces[#pieces + 1] = sub(s, lit_start)
    end
    return { pieces = pieces, has_var = has_var, text = s }
end

local concat = table.concat
local buf = {}
function _M.resolve(vs)
    if not vs.has_var then
        return vs.text
    end
    local p = vs.pieces
    for i = 1, #p do
        local x = p[i]
        if type(x) == "table" then
            buf[i] = var_value(x[1])
        else
            buf[i] = x
        end
    end
    local out = concat(buf, "", 1, #p)
    for i = 1, #p do
        buf[i] = nil
    end
    return out
end

--- prefix replacement (dataplane.md §4.6)
function _M.replace_prefix(path, prefix, replacement)
    local pl = #prefix
    if sub(path, 1, pl) ~= prefix then
        return path
    end
    local rest = sub(path, pl + 1)
    local res
    if rest == "" then
        res = replacement
    else
        local re = sub(replacement, -1) == "/"
        local rs = byte(rest, 1) == 47
        if re and rs then
            res = sub(replacement, 1, -2) .. rest
        elseif re or rs then
            res = replacement .. rest
        else
            res = replacement .. "/" .. rest
        end
    end
    if res == "" then
        return "/"
    end
    return res
end

-- ALB-generated answer (dataplane.md §4.15): status, reason header, empty body
function _M.alb_error(status, reason, extra)
    ngx.ctx.alb_err = true
    ngx.status = status
    local h = ngx.header
    h["X-ALB-ERR-REASON"] = reason
    if extra then
        for k, v in pairs(extra) do
            h[k] = v
        end
    end
    h["Content-Length"] = 0
    ngx.send_headers()
    return ngx.exit(ngx.HTTP_OK)
end

return _M
