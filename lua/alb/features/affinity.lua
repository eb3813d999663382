-- Session affinity of a backend group (dataplane.md §4.11): consistent hashing on a ketama-style ring.
--
-- Built once per balancer (policy apply): every node gets points in proportion to its weight (160 per node on
-- average), each point at md5("<peer>#<k>") (first 4 bytes); the points are sorted. Per request the key is
-- hashed with crc32 and the owner of the first point at or after it serves (binary search). Removing one of n
-- nodes only moves the keys it owned (~1/n of them); the others keep their node.
--
-- `cookie` attribute: `NAME[; Path=/p][; Domain=d][; SameSite=Strict|Lax|None][; Secure][; Max-Age=N]
-- [; Expires-In=N]` (docs/policy.md). Parsed once per build; a malformed part is dropped (logged), a name that is
-- not a token falls back to JSESSIONID, so nothing from the policy can break the Set-Cookie header.
local type = type
local floor = math.floor
local random = math.random
local byte = string.byte
local lower = string.lower
local gsub = string.gsub
local sort = table.sort
local find = string.find
local match = string.match
local sub = string.sub
local tonumber = tonumber
local ngx = ngx
local ngx_var = ngx.var
local md5_bin = ngx.md5_bin
local crc32 = ngx.crc32_long

local _M = {}

local POINTS_PER_NODE = 160

local function point(s)
    local a, b, c, d = byte(md5_bin(s), 1, 4)
    return ((a * 256 + b) * 256 + c) * 256 + d
end

--- build(b, policy, attribute) -> ring or nil (policy without affinity: round robin)
function _M.build(b, policy, attribute)
    if policy ~= "sip-hash" and policy ~= "cookie" and policy ~= "header" then
        return nil
    end
    local n = b.n
    if n == 0 then
        return nil
    end
    attribute = type(attribute) == "string" and attribute or ""
    local total = 0
    for j = 1, n do
        total = total + b.weights[j]
    end
    local pts = {}
    for j = 1, n do
        local count = floor(POINTS_PER_NODE * n * b.weights[j] / total + 0.5)
        if count < 1 then
            count = 1
        end
        local peer = b.peers[j]
        for k = 0, count - 1 do
            pts[#pts + 1] = { point(peer .. "#" .. k), j }
        end
    end
    sort(pts, function(x, y)
        if x[1] == y[1] then
            return x[2] < y[2]
        end
        return x[1] < y[1]
    end)
    local a = { kind = policy, hashes = {}, owners = {}, m = #pts }
    for i = 1, #pts do
        a.hashes[i] = pts[i][1]
        a.owners[i] = pts[i][2]
    end
    if policy == "cookie" then
        local c = _M.parse_cookie(attribute)
        a.cookie, a.cookie_attrs, a.cookie_expires_in, a.cookie_secure = c.name, c.attrs, c.expires_in, c.secure
        a.var = "cookie_" .. a.cookie
    elseif policy == "header" and attribute ~= "" then
        a.var = "http_" .. gsub(lower(attribute), "-", "_")
    end
    return a
end

local function trim(s)
    return match(s, "^%s*(.-)%s*$")
end

local TOKEN = "^[%w!#$%%&'*+%-.^_`|~]+$"

--- parse_cookie(attribute) -> {name, attrs (fixed "; ..." suffix, Path first), expires_in (seconds or nil),
-- secure (bool)}
function _M.parse_cookie(attribute)
    local parts = {}
    local pos = 1
    while true do
        local i = find(attribute, ";", pos, true)
        parts[#parts + 1] = trim(sub(attribute, pos, (i or 0) - 1))
        if not i then
            break
        end
        pos = i + 1
    end
    local name = parts[1]
    if not match(name, TOKEN) then
        if name ~= "" then
            ngx.log(ngx.WARN, "affinity cookie name ", name, " is not a token: JSESSIONID is used")
        end
        name = "JSESSIONID"
    end
    local path, domain, samesite, max_age, expires_in, secure = "/", nil, nil, nil, nil, false
    for k = 2, #parts do
        local p = parts[k]
        local key, val = match(p, "^([%a%-]+)=(.*)$")
        key = lower(key or p)
        if key == "path" and val and match(val, "^/[\33-\126]*$") and not find(val, ",", 1, true) then
            path = val
        elseif key == "domain" and val and match(val, "^[%w%.%-]+$") then
            domain = val
        elseif key == "samesite" and val and (val == "Strict" or val == "Lax" or val == "None") then
            samesite = val
        elseif key == "secure" and not val then
            secure = true
        elseif key == "max-age" and val and match(val, "^%d+$") then
            max_age = val
        elseif key == "expires-in" and val and match(val, "^%d+$") then
            expires_in = tonumber(val)
        elseif p ~= "" then
            ngx.log(ngx.WARN, "affinity cookie attribute ", p, " ignored")
        end
    end
    local attrs = "; Path=" .. path
    if domain then
        attrs = attrs .. "; Domain=" .. domain
    end
    if samesite then
        attrs = attrs .. "; SameSite=" .. samesite
    end
    if max_age then
        attrs = attrs .. "; Max-Age=" .. max_age
    end
    return { name = name, attrs = attrs, expires_in = expires_in, secure = secure }
end

-- first ring position whose hash is >= h (wrapping)
local function find_pos(a, h)
    local hashes = a.hashes
    local lo, hi = 1, a.m
    if h > hashes[hi] then
        return 1
    end
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if hashes[mid] < h then
            lo = mid + 1
        else
            hi = mid
        end
    end
    return lo
end
_M.find_pos = find_pos

local function random_key()
    return ngx.now() .. "." .. ngx.worker.pid() .. "." .. random(1, 2 ^ 30)
end

--- pick(a, ctx) -> node index, ring position
function _M.pick(a, ctx)
    local key
    local kind = a.kind
    if kind == "sip-hash" then
        key = ngx_var.remote_addr or ""
    else
        key = a.var and ngx_var[a.var]
        if not key or key == "" then
            key = random_key()
            if kind == "cookie" then
                local c = a.cookie .. "=" .. key .. a.cookie_attrs
                if a.cookie_expires_in then
                    c = c .. "; Expires=" .. ngx.cookie_time(ngx.time() + a.cookie_expires_in)
                end
                c = c .. "; HttpOnly"
                if a.cookie_secure or ngx_var.https == "on" then
                    c = c .. "; Secure"
                end
                ctx.alb_affinity_cookie = c
            end
        end
    end
    local pos = find_pos(a, crc32(key))
    return a.owners[pos], pos
end

--- next(a, pos, tried) -> the next node along the ring after `pos` not in `tried`, and its position
function _M.next(a, pos, tried)
    local m = a.m
    local owners = a.owners
    for _ = 1, m do
        pos = pos % m + 1
        local j = owners[pos]
        if not tried[j] then
            return j, pos
        end
    end
    return owners[pos], pos
end

return _M
