-- Match expressions (docs/policy.md "Expr"): compiled once per policy into closures.
--
-- A compiled expression is `fn(c) -> boolean` where `c` is a small per-request cache table: every request
-- attribute is fetched from nginx at most once per request and stored in `c` (`false` = absent). A cache
-- created with `new_static_cache` never touches nginx (used by the debug endpoint and tests).
local ffi = require("ffi")

local type = type
local find = string.find
local sub = string.sub
local byte = string.byte
local lower = string.lower
local gsub = string.gsub
local match = string.match
local tonumber = tonumber
local tostring = tostring
local floor = math.floor
local ngx = ngx
local ngx_var = ngx.var
local re_find = ngx.re.find
local get_method = ngx.req.get_method
local get_uri_args = ngx.req.get_uri_args

local C = ffi.C
pcall(ffi.cdef, "int memcmp(const void *s1, const void *s2, size_t n);")

local _M = {}

-- keys of the per-request cache (strings that cannot collide with "http_*", "cookie_*" variable names)
local K_HOST, K_URI, K_METHOD, K_SRC, K_ARGS, K_STATIC = "@host", "@uri", "@method", "@src", "@args", "@static"

local function new_static_cache(t)
    -- t: {host=, uri=, method=, src_ip=, headers={name=value}, args={k=v}, cookies={k=v}}
    local c = { [K_STATIC] = true }
    c[K_HOST] = t.host or false
    c[K_URI] = t.uri or false
    c[K_METHOD] = t.method or false
    c[K_SRC] = t.src_ip or false
    c[K_ARGS] = t.args or {}
    for k, v in pairs(t.headers or {}) do
        c["http_" .. gsub(lower(k), "-", "_")] = v
    end
    for k, v in pairs(t.cookies or {}) do
        c["cookie_" .. lower(k)] = v
    end
    return c
end
_M.new_static_cache = new_static_cache

---------------------------------------------------------------------------------------------------------------
-- attribute getters: get(c) -> string or false
---------------------------------------------------------------------------------------------------------------
local function get_host(c)
    local v = c[K_HOST]
    if v == nil then
        v = ngx_var.host
        if v then
            local p = find(v, ":", 1, true)
            if p then
                v = sub(v, 1, p - 1)
            end
        else
            v = false
        end
        c[K_HOST] = v
    end
    return v
end
_M.get_host = get_host

local function get_uri(c)
    local v = c[K_URI]
    if v == nil then
        v = ngx_var.uri or false
        c[K_URI] = v
    end
    return v
end
_M.get_uri = get_uri

local function get_method_c(c)
    local v = c[K_METHOD]
    if v == nil then
        v = get_method() or false
        c[K_METHOD] = v
    end
    return v
end

local function trim(s)
    return match(s, "^%s*(.-)%s*$")
end

local function get_src_ip(c)
    local v = c[K_SRC]
    if v == nil then
        v = ngx_var.http_x_real_ip
        if not v then
            local xff = ngx_var.http_x_forwarded_for
            if xff then
                local p = find(xff, ",", 1, true)
                if p then
                    xff = sub(xff, 1, p - 1)
                end
                v = trim(xff)
            else
                v = ngx_var.remote_addr
            end
        end
        v = v or false
        c[K_SRC] = v
    end
    return v
end

-- nginx variable getter (http_<key>, cookie_<key>); the cache key is the variable name itself
local function var_getter(name)
    return function(c)
        local v = c[name]
        if v == nil then
            if c[K_STATIC] then
                return false
            end
            v = ngx_var[name] or false
            c[name] = v
        end
        return v
    end
end

--- header_var(key) -> the nginx variable of request header `key` (`http_<key>`, lower case, `-` as `_`)
local function header_var(key)
    return "http_" .. gsub(lower(key), "-", "_")
end
_M.header_var = header_var
--- header_getter(var) -> the cached getter of that variable, as HEADER leaves use it
_M.header_getter = function(var)
    return var_getter(var)
end

local function param_getter(key)
    return function(c)
        local args = c[K_ARGS]
        if args == nil then
            args = get_uri_args()
            c[K_ARGS] = args
        end
        local v = args[key]
        if v == nil then
            return false
        end
        if type(v) == "table" then
            v = v[1]
        end
        if v == true then
            return ""
        end
        if type(v) ~= "string" then
            return false
        end
        return v
    end
end

local SINGLE = {
    HOST = function() return get_host end,
    URL = function() return get_uri end,
    METHOD = function() return get_method_c end,
    SRC_IP = function() return get_src_ip end,
}

local DUAL = {
    HEADER = function(key)
        return var_getter(header_var(key))
    end,
    PARAM = function(key)
        return param_getter(key)
    end,
    COOKIE = function(key)
        return var_getter("cookie_" .. lower(key))
    end,
}

---------------------------------------------------------------------------------------------------------------
-- RANGE helpers
---------------------------------------------------------------------------------------------------------------
local function parse_ipv4(s)
    local a, b, c, d = match(s, "^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$")
    if not a then
        return nil
    end
    a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
    if a > 255 or b > 255 or c > 255 or d > 255 then
        return nil
    end
    return ((a * 256 + b) * 256 + c) * 256 + d
end
_M.parse_ipv4 = parse_ipv4

-- IPv6 text -> array of 8 16-bit numbers, or nil
local function parse_ipv6(s)
    if not find(s, ":", 1, true) then
        return nil
    end
    if find(s, "[^%x:%.]") then
        return nil
    end
    local head, tail = s, nil
    local dc = find(s, "::", 1, true)
    if dc then
        head = sub(s, 1, dc - 1)
        tail = sub(s, dc + 2)
        if find(tail, "::", 1, true) then
            return nil
        end
    end
    local function groups(part, allow_v4)
        local out = {}
        if part == "" then
            return out
        end
        local n = 0
        local start = 1
        while true do
            local p = find(part, ":", start, true)
            local g = p and sub(part, start, p - 1) or sub(part, start)
            if not p and allow_v4 and find(g, ".", 1, true) then
                local v4 = parse_ipv4(g)
                if not v4 then
                    return nil
                end
                out[n + 1] = math.floor(v4 / 65536)
                out[n + 2] = v4 % 65536
                return out
            end
            if not match(g, "^%x%x?%x?%x?$") then
                return nil
            end
            n = n + 1
            out[n] = tonumber(g, 16)
            if not p then
                return out
            end
            start = p + 1
        end
    end
    local h = groups(head, not dc)
    if not h then
        return nil
    end
    local res
    if dc then
        local t = groups(tail, true)
        if not t then
            return nil
        end
        local missing = 8 - #h - #t
        if missing < 1 then
            return nil
        end
        res = {}
        for i = 1, #h do res[#res + 1] = h[i] end
        for _ = 1, missing do res[#res + 1] = 0 end
        for i = 1, #t do res[#res + 1] = t[i] end
    else
        if #h ~= 8 then
            return nil
        end
        res = h
    end
    return res
end
_M.parse_ipv6 = parse_ipv6

local function cmp6(a, b)
    for i = 1, 8 do
        local x, y = a[i], b[i]
        if x < y then
            return -1
        elseif x > y then
            return 1
        end
    end
    return 0
end

local function parse_num(s)
    if match(s, "^[+-]?%d+%.?%d*$") or match(s, "^[+-]?%.%d+$") then
        return tonumber(s)
    end
    return nil
end
_M.parse_num = parse_num

local function compile_range(get, lo, hi)
    local lo4, hi4 = parse_ipv4(lo), parse_ipv4(hi)
    local lo6, hi6 = parse_ipv6(lo), parse_ipv6(hi)
    local lon, hin = parse_num(lo), parse_num(hi)
    if (lo4 ~= nil) ~= (hi4 ~= nil) or (lo6 ~= nil) ~= (hi6 ~= nil) then
        return nil, "RANGE bounds must be of the same address family (" .. lo .. ", " .. hi .. ")"
    end
    return function(c)
        local v = get(c)
        if not v then
            return false
        end
        local v4 = parse_ipv4(v)
        if v4 then
            return lo4 ~= nil and lo4 <= v4 and v4 <= hi4
        end
        if find(v, ":", 1, true) then
            local v6 = parse_ipv6(v)
            if v6 then
                return lo6 ~= nil and cmp6(lo6, v6) <= 0 and cmp6(v6, hi6) <= 0
            end
        end
        if lon then
            local vn = parse_num(v)
            if vn then
                return lon <= vn and vn <= hin
            end
        end
        return lo <= v and v <= hi
    end
end

---------------------------------------------------------------------------------------------------------------
-- operators
---------------------------------------------------------------------------------------------------------------
local ARITY = { EQ = { 1, 1 }, IN = { 1, nil }, STARTS_WITH = { 1, 1 }, ENDS_WITH = { 1, 1 }, REGEX = { 1, 1 },
    RANGE = { 2, 2 }, EXIST = { 0, 0 } }

local function host_wildcard(get, arg)
    local alen = #arg
    if byte(arg, 1) == 42 and byte(arg, 2) == 46 then -- "*."
        -- value = <one non-empty label without '.'> .. suffix
        local suffix = sub(arg, 2) -- ".a.com"
        local slen = #suffix
        return function(c)
            local v = get(c)
            if not v then
                return false
            end
            local p = find(v, ".", 1, true)
            return p ~= nil and p > 1 and #v - p + 1 == slen and find(v, suffix, p, true) == p
        end
    end
    -- original ALB formula for other operands: drop the first char, require len(v) >= len(arg), v ends with
    -- the rest, and no '.' in the first len(v)-len(arg) chars
    local suffix = sub(arg, 2)
    local slen = #suffix
    return function(c)
        local v = get(c)
        if not v then
            return false
        end
        local vlen = #v
        if vlen < alen then
            return false
        end
        local at = vlen - slen + 1
        if slen > 0 and find(v, suffix, at, true) ~= at then
            return false
        end
        local d = find(v, ".", 1, true)
        return d == nil or d > vlen - alen
    end
end

-- compile(e, true): the expression was validated when the policy was stored (alb/schema.lua compiles every
-- expression in the policy API): regexes are not compiled here but on their first use (`o` caches them per
-- worker), which keeps a worker's router build from compiling thousands of regexes no request may ever hit.
local trusted = false

local function compile_leaf(e)
    local op, m = e[1], e[2]
    local arity = ARITY[op]
    if not arity then
        return nil, "unknown operator " .. tostring(op)
    end
    if type(m) ~= "string" then
        return nil, op .. ": matcher must be a string"
    end
    local get, first
    if SINGLE[m] then
        get = SINGLE[m]()
        first = 3
    elseif DUAL[m] then
        local key = e[3]
        if type(key) ~= "string" or key == "" then
            return nil, op .. " " .. m .. ": key must be a non-empty string"
        end
        get = DUAL[m](key)
        first = 4
    else
        return nil, op .. ": unknown matcher " .. m
    end
    local args = {}
    for i = first, #e do
        local a = e[i]
        if type(a) ~= "string" then
            return nil, op .. " " .. m .. ": operand " .. (i - first + 1) .. " must be a string"
        end
        args[#args + 1] = a
    end
    local n = #args
    if n < arity[1] or (arity[2] and n > arity[2]) then
        return nil, op .. " " .. m .. ": wrong number of operands (" .. n .. ")"
    end

    if op == "EQ" then
        local a = args[1]
        return function(c)
            return get(c) == a
        end
    elseif op == "IN" then
        if n == 1 then
            local a = args[1]
            return function(c)
                return get(c) == a
            end
        end
        local set = {}
        for i = 1, n do
            set[args[i]] = true
        end
        return function(c)
            local v = get(c)
            return v and set[v] == true or false
        end
    elseif op == "STARTS_WITH" then
        local a = args[1]
        local alen = #a
        return function(c)
            local v = get(c)
            return v and #v >= alen and C.memcmp(v, a, alen) == 0 or false
        end
    elseif op == "ENDS_WITH" then
        return host_wildcard(get, args[1])
    elseif op == "REGEX" then
        local pat = args[1]
        if not trusted then
            local ok, from, _, err = pcall(re_find, "", pat, "jo")
            if not ok then
                return nil, op .. " " .. m .. ": invalid regex " .. pat .. ": " .. tostring(from)
            end
            if err then
                return nil, op .. " " .. m .. ": invalid regex " .. pat .. ": " .. tostring(err)
            end
        end
        return function(c)
            local v = get(c)
            if not v then
                return false
            end
            return re_find(v, pat, "jo") ~= nil
        end
    elseif op == "RANGE" then
        return compile_range(get, args[1], args[2])
    elseif op == "EXIST" then
        return function(c)
            return get(c) ~= false
        end
    end
    return nil, "unknown operator " .. tostring(op)
end

local compile

-- AND / OR of fns[i..j] as a tree of closures of at most three operands: no loop in the request path (a loop
-- that exits on its first pass never gets hot enough for LuaJIT to compile it, and a trace that meets such a loop
-- is aborted: rewrite() would then run interpreted)
local function always() return true end
local function never() return false end

local function pair(is_and, a, b)
    if is_and then
        return function(c) return a(c) and b(c) end
    end
    return function(c) return a(c) or b(c) end
end

local function triple(is_and, a, b, d)
    if is_and then
        return function(c) return a(c) and b(c) and d(c) end
    end
    return function(c) return a(c) or b(c) or d(c) end
end

local function tree(is_and, fns, i, j)
    local n = j - i + 1
    if n <= 0 then
        return is_and and always or never
    elseif n == 1 then
        return fns[i]
    elseif n == 2 then
        return pair(is_and, fns[i], fns[i + 1])
    elseif n == 3 then
        return triple(is_and, fns[i], fns[i + 1], fns[i + 2])
    end
    local m = i + floor(n / 2) - 1
    return pair(is_and, tree(is_and, fns, i, m), tree(is_and, fns, m + 1, j))
end

local function compile_bool(e, op)
    local fns = {}
    for i = 2, #e do
        local f, err = compile(e[i])
        if not f then
            return nil, err
        end
        fns[#fns + 1] = f
    end
    return tree(op == "AND", fns, 1, #fns)
end

compile = function(e)
    if type(e) ~= "table" or type(e[1]) ~= "string" then
        return nil, "expression must be an array starting with an operator string"
    end
    -- every element must be in the array part (no holes / object keys)
    local op = e[1]
    if op == "AND" or op == "OR" then
        return compile_bool(e, op)
    end
    return compile_leaf(e)
end

--- compile(expr) -> fn(c) -> boolean, or nil, err
function _M.compile(e, validated)
    trusted = validated == true
    local f, err = compile(e)
    trusted = false
    if not f then
        return nil, err
    end
    return f
end

return _M
