-- config.access (docs/policy.md "Rule config (v1)"): source-address allow/deny lists, refused with 403.
--
-- Address lists (also limit.whitelist) are compiled once per policy into sorted, merged ranges of binary
-- addresses (4 or 16 bytes, network order). Per request: $binary_remote_addr (no text parsing), a binary
-- search over the ranges of its family and one more compare (LuaJIT compares strings bytewise, unsigned).
-- An IPv4 entry also covers its IPv4-mapped IPv6 form (::ffff:a.b.c.d) and an entry inside ::ffff:0:0/96 also
-- covers the IPv4 addresses it maps, so a dual-stack socket sees the same lists.
local u = require("alb.features.util")
local expr = require("alb.expr")

local char = string.char
local match = string.match
local find = string.find
local floor = math.floor
local sort = table.sort
local unpack = unpack
local ipairs = ipairs
local tonumber = tonumber
local ngx = ngx
local ngx_var = ngx.var

local _M = {}

-- address text -> array of 4 or 16 byte values, or nil
local function bytes_of(s)
    local n = expr.parse_ipv4(s)
    if n then
        return { floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256 }
    end
    local g = expr.parse_ipv6(s)
    if g then
        local out = {}
        for i = 1, 8 do
            out[2 * i - 1] = floor(g[i] / 256)
            out[2 * i] = g[i] % 256
        end
        return out
    end
    return nil
end

-- lowest and highest address of `prefix` bits of `b`, as binary strings
local function range(b, prefix)
    local lo, hi = {}, {}
    for i = 1, #b do
        local bits = prefix - (i - 1) * 8 -- network bits within this byte
        if bits >= 8 then
            lo[i], hi[i] = b[i], b[i]
        elseif bits <= 0 then
            lo[i], hi[i] = 0, 255
        else
            local span = 2 ^ (8 - bits)
            local base = b[i] - b[i] % span
            lo[i], hi[i] = base, base + span - 1
        end
    end
    return char(unpack(lo)), char(unpack(hi))
end

local function is_mapped(b)
    if #b ~= 16 or b[11] ~= 255 or b[12] ~= 255 then
        return false
    end
    for i = 1, 10 do
        if b[i] ~= 0 then
            return false
        end
    end
    return true
end

-- sorted by low end, overlapping ranges merged -> {los, his, n}
local function merge(rs)
    sort(rs, function(x, y) return x[1] < y[1] end)
    local los, his, n = {}, {}, 0
    for _, r in ipairs(rs) do
        if n > 0 and r[1] <= his[n] then
            if r[2] > his[n] then
                his[n] = r[2]
            end
        else
            n = n + 1
            los[n], his[n] = r[1], r[2]
        end
    end
    return { los = los, his = his, n = n }
end

--- compile_set(list, path) -> address set, or nil for an absent/empty list (validation errors raise)
function _M.compile_set(list, path)
    list = u.string_list(list, path)
    if not list then
        return nil
    end
    local r4, r6 = {}, {}
    for i, s in ipairs(list) do
        local where = path .. "[" .. (i - 1) .. "]"
        local addr, p = match(s, "^([^/]+)/(%d%d?%d?)$")
        if not addr then
            if find(s, "/", 1, true) then
                u.fail(where, "must be an IPv4/IPv6 address or CIDR, got " .. s)
            end
            addr = s
        end
        local b = bytes_of(addr)
        if not b then
            u.fail(where, "must be an IPv4/IPv6 address or CIDR, got " .. s)
        end
        local max = #b * 8
        local prefix = p and tonumber(p) or max
        if prefix > max then
            u.fail(where, "has a prefix length above " .. max .. ": " .. s)
        end
        local lo, hi = range(b, prefix)
        if #b == 4 then
            r4[#r4 + 1] = { lo, hi }
            local m = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, b[1], b[2], b[3], b[4] }
            local mlo, mhi = range(m, 96 + prefix)
            r6[#r6 + 1] = { mlo, mhi }
        else
            r6[#r6 + 1] = { lo, hi }
            if prefix >= 96 and is_mapped(b) then
                local vlo, vhi = range({ b[13], b[14], b[15], b[16] }, prefix - 96)
                r4[#r4 + 1] = { vlo, vhi }
            end
        end
    end
    return { [4] = merge(r4), [16] = merge(r6) }
end

--- contains(set, bin) -> whether the binary address `bin` (4 or 16 bytes) is in the set
local function contains(set, bin)
    local r = set[#bin]
    if not r or r.n == 0 then
        return false
    end
    local los = r.los
    if bin < los[1] then
        return false
    end
    -- the last range whose low end is <= bin
    local lo, hi = 1, r.n
    while lo < hi do
        local mid = floor((lo + hi + 1) / 2)
        if los[mid] <= bin then
            lo = mid
        else
            hi = mid - 1
        end
    end
    return bin <= r.his[lo]
end
_M.contains = contains

function _M.compile(a, path)
    if not u.is_object(a) then
        u.fail(path, "must be an object")
    end
    local allow = _M.compile_set(a.allow, path .. ".allow")
    local deny = _M.compile_set(a.deny, path .. ".deny")
    if not allow and not deny then
        return nil
    end
    return { allow = allow, deny = deny }
end

--- rewrite phase, right after the match: answers 403 (and does not return) when the client is refused
function _M.run(a)
    local bin = ngx_var.binary_remote_addr or ""
    local deny = a.deny
    if deny and contains(deny, bin) then
        return u.alb_error(403, "AccessDenied : client address denied")
    end
    local allow = a.allow
    if allow and not contains(allow, bin) then
        return u.alb_error(403, "AccessDenied : client address not allowed")
    end
end

return _M
