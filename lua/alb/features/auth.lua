-- config.auth (dataplane.md §4.12): forward auth first, then basic auth.
--
-- Basic: apr1 (MD5-crypt, computed here with ngx.md5_bin) and bcrypt (the system's crypt(3) through ffi:
-- Debian's libxcrypt implements $2a$/$2b$/$2y$). A verified (hash, password) pair is remembered per worker
-- for 5 minutes (LRU of 500), so the expensive bcrypt runs once per user and worker.
-- Forward: a minimal HTTP/1.1 client on a cosocket (no subrequest, no extra location): one request per client
-- request, `Connection: close`, response headers only.
local u = require("alb.features.util")
local lrucache = require("resty.lrucache")
local ffi = require("ffi")

local type = type
local pairs = pairs
local ipairs = ipairs
local tostring = tostring
local tonumber = tonumber
local byte = string.byte
local sub = string.sub
local find = string.find
local lower = string.lower
local match = string.match
local gmatch = string.gmatch
local concat = table.concat
local band = bit.band
local bor = bit.bor
local lshift = bit.lshift
local rshift = bit.rshift
local ngx = ngx
local ngx_var = ngx.var
local header = ngx.header
local md5_bin = ngx.md5_bin
local decode_base64 = ngx.decode_base64
local alb_error = u.alb_error

local _M = {}

---------------------------------------------------------------------------------------------------------------
-- password hashes
---------------------------------------------------------------------------------------------------------------
local ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

local function to64(v, n, out)
    for _ = 1, n do
        local i = band(v, 0x3f) + 1
        out[#out + 1] = sub(ITOA64, i, i)
        v = rshift(v, 6)
    end
end

--- Apache apr1 (MD5-crypt with magic "$apr1$"): returns the 22-char hash part
local function apr1(pw, salt)
    local magic = "$apr1$"
    local final = md5_bin(pw .. salt .. pw)
    local parts = { pw, magic, salt }
    local pl = #pw
    while pl > 0 do
        parts[#parts + 1] = sub(final, 1, pl > 16 and 16 or pl)
        pl = pl - 16
    end
    local i = #pw
    local first = sub(pw, 1, 1)
    while i > 0 do
        parts[#parts + 1] = band(i, 1) == 1 and "\0" or first
        i = rshift(i, 1)
    end
    final = md5_bin(concat(parts))
    for r = 0, 999 do
        local odd = band(r, 1) == 1
        local b = odd and pw or final
        if r % 3 ~= 0 then
            b = b .. salt
        end
        if r % 7 ~= 0 then
            b = b .. pw
        end
        b = b .. (odd and final or pw)
        final = md5_bin(b)
    end
    local f = { byte(final, 1, 16) }
    local out = {}
    local function triple(a, b, c)
        to64(bor(lshift(f[a + 1], 16), lshift(f[b + 1], 8), f[c + 1]), 4, out)
    end
    triple(0, 6, 12)
    triple(1, 7, 13)
    triple(2, 8, 14)
    triple(3, 9, 15)
    triple(4, 10, 5)
    to64(f[12], 2, out)
    return concat(out)
end
_M.apr1 = apr1

local libcrypt
local function crypt(pw, setting)
    if libcrypt == nil then
        pcall(ffi.cdef, "char *crypt(const char *key, const char *salt);")
        local ok, lib = pcall(ffi.load, "libcrypt.so.1")
        if not ok then
            ok, lib = pcall(ffi.load, "crypt")
        end
        libcrypt = ok and lib or false
        if not libcrypt then
            ngx.log(ngx.ERR, "alb: libcrypt not found: bcrypt passwords cannot be checked")
        end
    end
    if not libcrypt then
        return nil
    end
    local r = libcrypt.crypt(pw, setting)
    if r == nil then
        return nil
    end
    return ffi.string(r)
end
_M.crypt = crypt

-- constant-time-ish comparison of equal-length strings
local function same(a, b)
    if #a ~= #b then
        return false
    end
    local d = 0
    for i = 1, #a do
        d = bor(d, bit.bxor(byte(a, i), byte(b, i)))
    end
    return d == 0
end

local memo = lrucache.new(500)
local MEMO_TTL = 300

local function verify(user, pw)
    local key = user.hash .. "\0" .. pw
    if memo:get(key) then
        return true
    end
    local ok
    if user.algorithm == "apr1" then
        ok = same(apr1(pw, user.salt), user.digest)
    else
        local r = crypt(pw, user.hash)
        ok = r ~= nil and same(r, user.hash)
    end
    if ok then
        memo:set(key, true, MEMO_TTL)
    end
    return ok
end

---------------------------------------------------------------------------------------------------------------
-- compile
---------------------------------------------------------------------------------------------------------------
local function compile_basic(b, path)
    if not u.is_object(b) then
        u.fail(path, "must be an object")
    end
    local realm = u.opt_string(b.realm, path .. ".realm") or ""
    if find(realm, '"', 1, true) then
        u.fail(path .. ".realm", "must not contain quotes")
    end
    local c = { www = 'Basic realm="' .. realm .. '"', users = {} }
    local e = u.opt_string(b.err, path .. ".err")
    if e and e ~= "" then
        c.err = "AuthFail : invalid cfg " .. e
    end
    local users = b.users
    if not u.absent(users) then
        if not u.is_object(users) then
            u.fail(path .. ".users", "must be an object")
        end
        for name, h in pairs(users) do
            local p = path .. ".users." .. name
            if not u.is_object(h) or type(h.hash) ~= "string" then
                u.fail(p, "must be {algorithm, hash}")
            end
            if h.algorithm == "apr1" then
                local salt, digest = match(h.hash, "^%$apr1%$([./%w]+)%$([./%w]+)$")
                if not salt or #salt > 8 or #digest ~= 22 then
                    u.fail(p .. ".hash", "is not an apr1 hash ($apr1$<salt>$<22 chars>)")
                end
                c.users[name] = { algorithm = "apr1", hash = h.hash, salt = salt, digest = digest }
            elseif h.algorithm == "bcrypt" then
                if not match(h.hash, "^%$2[aby]%$%d%d%$[./%w]+$") or #h.hash ~= 60 then
                    u.fail(p .. ".hash", "is not a bcrypt hash ($2a$, $2b$ or $2y$)")
                end
                c.users[name] = { algorithm = "bcrypt", hash = h.hash }
            else
                u.fail(p .. ".algorithm", "must be apr1 or bcrypt, got " .. tostring(h.algorithm))
            end
        end
    end
    return c
end

local METHODS = { GET = true, POST = true, PUT = true, HEAD = true, DELETE = true, PATCH = true, OPTIONS = true }

-- nginx.conf has a `resolver` (--resolver or /etc/resolv.conf's nameservers): set by init() from nginx.conf
local has_resolver = false

--- init{resolver = bool}: init_by_lua, from nginx.conf (src/nginx/render.rs)
function _M.init(opts)
    has_resolver = opts and opts.resolver == true or false
end

-- letters, digits and "-" in labels of 1..63 (not starting with "-"), one optional trailing "."
local function valid_name(h)
    if #h > 253 then
        return false
    end
    if sub(h, -1) == "." then
        h = sub(h, 1, -2)
    end
    if h == "" then
        return false
    end
    for label in gmatch(h .. ".", "([^.]*)%.") do
        if label == "" or #label > 63 or byte(label, 1) == 45 or find(label, "[^%w-]") then
            return false
        end
    end
    return true
end

-- "host[:port]" of a forward auth URL → host, port (number or nil), is_name; or nil, problem. Same rules as the
-- compiler (src/compile/features.rs auth_host_ok).
local function check_hostport(hp)
    local host, port
    if byte(hp, 1) == 91 then -- "["
        local ip, rest = match(hp, "^%[([%x:.]+)%](.*)$")
        if not ip or not find(ip, ":", 1, true) then
            return nil, "[...] must hold an IPv6 address"
        end
        if rest ~= "" then
            port = match(rest, "^:(%d+)$")
            if not port then
                return nil, "has a bad port"
            end
        end
        host = ip
    else
        host, port = match(hp, "^([^:]+):(%d+)$")
        if not host then
            host = hp
            if find(host, ":", 1, true) then
                return nil, "has a bad port"
            end
        end
    end
    if port then
        port = tonumber(port)
        if not port or port < 1 or port > 65535 then
            return nil, "port must be in 1..65535"
        end
    end
    if match(host, "^[%d.]+$") then
        local a, b, c, d = match(host, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
        if not a or tonumber(a) > 255 or tonumber(b) > 255 or tonumber(c) > 255 or tonumber(d) > 255 then
            return nil, host .. " is not an IPv4 address"
        end
        return host, port, false
    end
    if find(host, ":", 1, true) then
        return host, port, false -- bracketed IPv6
    end
    if not valid_name(host) then
        return nil, host .. " is not a host name (letters, digits, - and . only) or an IP address"
    end
    return host, port, true
end
_M.check_hostport = check_hostport

local function compile_forward(f, path)
    if not u.is_object(f) then
        u.fail(path, "must be an object")
    end
    local scheme, hostport, rest
    if type(f.url) == "string" then
        scheme, hostport, rest = match(f.url, "^(https?)://([^/?]*)(.*)$")
    end
    if not scheme or hostport == "" or find(hostport, "$", 1, true) then
        u.fail(path .. ".url", "must be an http:// or https:// URL with a literal host")
    end
    local host, port, is_name = check_hostport(hostport)
    if not host then
        u.fail(path .. ".url", "host " .. port)
    end
    if is_name and not has_resolver then
        u.fail(path .. ".url", "host name " .. host .. " needs a resolver: nginx.conf has none (no nameserver in "
            .. "resolv.conf and no --resolver flag); use an IP address or give --resolver")
    end
    if rest == "" then
        rest = "/"
    elseif byte(rest, 1) == 63 then -- "?"
        rest = "/" .. rest
    end
    u.var_string(f.url, path .. ".url")
    local c = {
        url = f.url,
        scheme = scheme,
        host = host,
        port = port or (scheme == "https" and 443 or 80),
        hostport = hostport,
        -- TLS SNI: the host name; none for an IP address
        sni = is_name and host or nil,
        path = u.var_string(rest, path .. ".url"),
        method = u.opt_string(f.method, path .. ".method") or "GET",
        upstream_headers = u.string_list(f.upstream_headers, path .. ".upstream_headers"),
        always_set_cookie = u.opt_bool(f.always_set_cookie, path .. ".always_set_cookie") or false,
        timeout = u.opt_uint(f.timeout_ms, path .. ".timeout_ms") or 5000,
        headers = {},
    }
    if c.timeout == 0 then
        c.timeout = 5000
    end
    if not METHODS[c.method] then
        u.fail(path .. ".method", "is not a supported method: " .. c.method)
    end
    for i, h in ipairs(c.upstream_headers or {}) do
        u.header_name(h, path .. ".upstream_headers[" .. (i - 1) .. "]")
    end
    local ah = u.string_map(f.auth_headers, path .. ".auth_headers", true)
    if ah then
        for k, v in pairs(ah) do
            c.headers[#c.headers + 1] = { lower(k), u.var_string(v, path .. ".auth_headers." .. k) }
        end
        table.sort(c.headers, function(a, b) return a[1] < b[1] end)
    end
    local rr = u.opt_string(f.auth_request_redirect, path .. ".auth_request_redirect")
    if rr and rr ~= "" then
        c.redirect = u.var_string(rr, path .. ".auth_request_redirect")
    end
    local si = u.opt_string(f.signin, path .. ".signin")
    if si and si ~= "" then
        c.signin = u.var_string(si, path .. ".signin")
    end
    return c
end

function _M.compile(a, path)
    if not u.is_object(a) then
        u.fail(path, "must be an object")
    end
    local c = {}
    if not u.absent(a.forward) then
        c.forward = compile_forward(a.forward, path .. ".forward")
    end
    if not u.absent(a.basic) then
        c.basic = compile_basic(a.basic, path .. ".basic")
    end
    if not c.forward and not c.basic then
        return nil
    end
    return c
end

---------------------------------------------------------------------------------------------------------------
-- basic
---------------------------------------------------------------------------------------------------------------
local function basic(b)
    if b.err then
        return alb_error(500, b.err)
    end
    local www = { ["WWW-Authenticate"] = b.www }
    local h = ngx_var.http_authorization
    if not h then
        return alb_error(401, "AuthFail : basic_auth but req no auth header", www)
    end
    if sub(h, 1, 6) ~= "Basic " then
        return alb_error(401, "AuthFail : invalid Authorization scheme, not basic auth.", www)
    end
    local dec = decode_base64(match(sub(h, 7), "^%s*(.-)%s*$"))
    if not dec then
        return alb_error(401, "AuthFail : invalid base64 encoding", www)
    end
    -- RFC 7617: the user id has no ":", the password may contain some (the original split on every ":")
    local colon = find(dec, ":", 1, true)
    if not colon then
        return alb_error(401, "AuthFail : invalid format", www)
    end
    local name, pw = sub(dec, 1, colon - 1), sub(dec, colon + 1)
    local user = b.users[name]
    if not user or not verify(user, pw) then
        return alb_error(401, "AuthFail : invalid user or passwd", www)
    end
end

---------------------------------------------------------------------------------------------------------------
-- forward
---------------------------------------------------------------------------------------------------------------
local SKIP = { ["content-length"] = true, ["transfer-encoding"] = true, connection = true, ["keep-alive"] = true,
    upgrade = true, expect = true, te = true, ["proxy-connection"] = true }

local function auth_request(f)
    local host, port, hostport = f.host, f.port, f.hostport
    local path = u.resolve(f.path)
    local hdrs = {}
    for k, v in pairs(ngx.req.get_headers(200)) do
        if not SKIP[k] then
            hdrs[k] = v
        end
    end
    local request_uri = ngx_var.request_uri
    local sch = ngx_var.scheme
    hdrs["x-original-uri"] = request_uri
    hdrs["x-scheme"] = sch
    hdrs["x-original-url"] = sch .. "://" .. (ngx_var.http_host or ngx_var.host) .. request_uri
    hdrs["x-original-method"] = ngx.req.get_method()
    hdrs["x-sent-from"] = "alb"
    hdrs["host"] = hostport
    hdrs["x-real-ip"] = ngx_var.remote_addr
    hdrs["x-forwarded-for"] = ngx_var.proxy_add_x_forwarded_for
    hdrs["x-auth-request-redirect"] = request_uri
    for _, kv in ipairs(f.headers) do
        hdrs[kv[1]] = u.resolve(kv[2])
    end
    if f.redirect then
        local r = u.resolve(f.redirect)
        if r ~= "" then
            hdrs["x-auth-request-redirect"] = r
        end
    end
    local lines = { f.method, " ", path, " HTTP/1.1\r\n" }
    for k, v in pairs(hdrs) do
        if type(v) == "table" then
            for _, x in ipairs(v) do
                lines[#lines + 1] = k .. ": " .. x .. "\r\n"
            end
        else
            lines[#lines + 1] = k .. ": " .. v .. "\r\n"
        end
    end
    lines[#lines + 1] = "connection: close\r\n\r\n"

    local sock = ngx.socket.tcp()
    sock:settimeouts(f.timeout, f.timeout, f.timeout)
    -- a host name is resolved by nginx's `resolver` (nginx.conf); a failure is a connect failure
    local ok, err = sock:connect(host, port)
    if not ok then
        ngx.log(ngx.ERR, "alb: forward auth connect ", host, ":", port, ": ", err)
        return nil, "send"
    end
    if f.scheme == "https" then
        ok, err = sock:sslhandshake(nil, f.sni, false)
        if not ok then
            ngx.log(ngx.ERR, "alb: forward auth TLS ", host, ":", port, ": ", err)
            sock:close()
            return nil, "send"
        end
    end
    ok, err = sock:send(lines)
    if not ok then
        sock:close()
        return nil, "send"
    end
    local status_line
    status_line, err = sock:receive("*l")
    local status = status_line and tonumber(match(status_line, "^HTTP/%d%.%d (%d%d%d)"))
    if not status then
        ngx.log(ngx.ERR, "alb: forward auth ", f.url, ": bad answer: ", tostring(status_line or err))
        sock:close()
        return nil, "send"
    end
    local rh = {}
    while true do
        local line
        line, err = sock:receive("*l")
        if not line then
            sock:close()
            return nil, "send"
        end
        if line == "" then
            break
        end
        local k, v = match(line, "^([^:]+):%s*(.-)%s*$")
        if k then
            k = lower(k)
            local cur = rh[k]
            if cur == nil then
                rh[k] = v
            elseif type(cur) == "table" then
                cur[#cur + 1] = v
            else
                rh[k] = { cur, v }
            end
        end
    end
    sock:close()
    return status, rh
end

local function forward(f)
    local status, rh = auth_request(f)
    if not status then
        return alb_error(500, "AuthFail : send-auth-request-fail")
    end
    local cookies = rh["set-cookie"]
    if status >= 200 and status < 300 then
        for _, h in ipairs(f.upstream_headers or {}) do
            local v = rh[lower(h)]
            if v then
                ngx.req.set_header(h, v)
            end
        end
        if cookies then
            ngx.ctx.alb_auth_cookies = { cookies = cookies, always = f.always_set_cookie }
        end
        return
    end
    local extra = {}
    if f.always_set_cookie and cookies then
        extra["Set-Cookie"] = cookies
    end
    if status == 401 then
        if rh["www-authenticate"] then
            extra["WWW-Authenticate"] = rh["www-authenticate"]
        end
        if f.signin then
            ngx.ctx.alb_err = true
            ngx.status = 302
            for k, v in pairs(extra) do
                header[k] = v
            end
            header["Location"] = u.resolve(f.signin)
            header["Content-Length"] = 0
            ngx.send_headers()
            return ngx.exit(ngx.HTTP_OK)
        end
        return alb_error(401, "AuthFail : auth-service-status: 401", extra)
    elseif status == 403 then
        return alb_error(403, "AuthFail : auth-service-status: 403", extra)
    end
    return alb_error(500, "AuthFail : auth-service-status: " .. status, extra)
end

--- rewrite phase: returns when the request may go on
function _M.run(a)
    if a.forward then
        forward(a.forward)
    end
    if a.basic then
        basic(a.basic)
    end
end

local COOKIE_STATUS = { [200] = true, [201] = true, [204] = true, [206] = true, [301] = true, [302] = true,
    [303] = true, [304] = true, [307] = true, [308] = true }

--- header filter: auth cookies after the upstream's
function _M.header_filter(ctx)
    local ac = ctx.alb_auth_cookies
    if not ac then
        return
    end
    if not (COOKIE_STATUS[ngx.status] or ac.always) then
        return
    end
    local out = {}
    local cur = header["Set-Cookie"]
    if type(cur) == "table" then
        for _, c in ipairs(cur) do out[#out + 1] = c end
    elseif cur then
        out[1] = cur
    end
    local add = ac.cookies
    if type(add) == "table" then
        for _, c in ipairs(add) do out[#out + 1] = c end
    else
        out[#out + 1] = add
    end
    header["Set-Cookie"] = out
end

return _M
