-- TLS certificate selection per handshake (../shared/spec/dataplane.md §4.17), from the policy's
-- `certificates` map (docs/policy.md "certificates").
--
-- build() runs when a worker applies a policy (alb/init.lua, from a timer): every PEM chain/key is parsed once
-- into cdata and kept by content, so a new policy only parses the certificates that changed. certificate()
-- runs in ssl_certificate_by_lua and only does table lookups. Keys and certificates reach the workers through
-- the policy (shared dict), never from files: workers may run as an unprivileged user.
local ssl = require("ngx.ssl")

local ngx = ngx
local log = ngx.log
local ERR, INFO = ngx.ERR, ngx.INFO
local type = type
local pairs = pairs
local tostring = tostring
local byte = string.byte
local find = string.find
local sub = string.sub
local lower = string.lower

local _M = {}

-- key -> {cert = cdata, key = cdata}: what handshakes use now
local current = {}
-- "<cert pem>\n<key pem>" -> entry, the entries of `current` by content (reused by the next build)
local by_pem = {}
local fallback_port_cert -- env FallbackDefaultPortCert=true, read on first use in the worker

local function fallback()
    if fallback_port_cert == nil then
        fallback_port_cert = os.getenv("FallbackDefaultPortCert") == "true"
    end
    return fallback_port_cert
end

--- build(map) -> {key -> entry}, {key -> pem index}, n, errors: parses what the previous build did not hold.
-- An entry that does not parse is left out (logged); the others still serve.
function _M.build(map)
    local out, pems, n, errors = {}, {}, 0, 0
    if type(map) ~= "table" then
        return out, pems, n, errors
    end
    for k, v in pairs(map) do
        if type(v) == "table" and type(v.cert) == "string" and type(v.key) == "string" then
            local id = v.cert .. "\n" .. v.key
            local e = by_pem[id]
            if not e then
                local cert, err = ssl.parse_pem_cert(v.cert)
                local key
                if cert then
                    key, err = ssl.parse_pem_priv_key(v.key)
                end
                if cert and key then
                    e = { cert = cert, key = key }
                else
                    errors = errors + 1
                    log(ERR, "alb: certificate \"", k, "\" cannot be parsed, left out: ", tostring(err))
                end
            end
            if e then
                out[lower(k)] = e
                pems[id] = e
                n = n + 1
            end
        end
    end
    return out, pems, n, errors
end

--- activate(certs, pems): the result of build() becomes what handshakes use.
function _M.activate(certs, pems)
    current = certs or {}
    by_pem = pems or {}
end

-- map key of the fallback certificate (step 5), set by the compiler only under DEFAULT_SSL_STRATEGY Always/Both
local FALLBACK = "*"

--- lookup(name, port) -> entry, key (pure table lookups; `name` lower case or nil). Steps of §4.17:
-- 1. no SNI: "<port>"; 2. "<sni>", "<sni>/<port>"; 3. "*.<parent>", "*.<parent>/<port>"; 4. "<port>" when
-- FallbackDefaultPortCert=true; 5. the fallback certificate "*" (when the policy has one); 6. nothing.
local function lookup(name, port)
    local p = tostring(port)
    local e
    if not name then
        e = current[p]
        if e then
            return e, p
        end
    else
        e = current[name]
        if e then
            return e, name
        end
        local k = name .. "/" .. p
        e = current[k]
        if e then
            return e, k
        end
        local dot = find(name, ".", 1, true)
        if dot then
            local w = "*" .. sub(name, dot)
            e = current[w]
            if e then
                return e, w
            end
            k = w .. "/" .. p
            e = current[k]
            if e then
                return e, k
            end
        end
        if fallback() then
            e = current[p]
            if e then
                return e, p
            end
        end
    end
    e = current[FALLBACK]
    if e then
        return e, FALLBACK
    end
    return nil
end
_M.lookup = lookup

--- ssl_certificate_by_lua: install the certificate for this SNI/port or fail the handshake.
function _M.certificate()
    local name = ssl.server_name()
    if name then
        local last = byte(name, -1)
        if not last or (last >= 48 and last <= 57) then
            name = nil -- an IP address (or empty) is no SNI
        else
            name = lower(name)
        end
    end
    local port, perr = ssl.server_port()
    if not port then
        log(ERR, "alb: TLS handshake: no server port: ", tostring(perr))
        return ngx.exit(ngx.ERROR)
    end
    local e = lookup(name, port)
    if not e then
        log(INFO, "alb: TLS handshake on port ", port, " for SNI ", name or "(none)", ": no certificate, failed")
        return ngx.exit(ngx.ERROR)
    end
    local ok, err = ssl.clear_certs()
    if ok then
        ok, err = ssl.set_cert(e.cert)
    end
    if ok then
        ok, err = ssl.set_priv_key(e.key)
    end
    if not ok then
        log(ERR, "alb: TLS handshake on port ", port, ": cannot set certificate: ", tostring(err))
        return ngx.exit(ngx.ERROR)
    end
end

return _M
