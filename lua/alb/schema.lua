-- Policy validation (docs/policy.md). Called by the policy API before a policy is stored, so that a bad policy
-- can never replace a good one. Checks the type of every field the data plane uses and compiles every
-- expression (and therefore every regex).
local cjson = require("cjson")
local expr = require("alb.expr")
local features = require("alb.features")
local util = require("alb.features.util")

local type = type
local pairs = pairs
local tostring = tostring
local fmt = string.format

local _M = {}

_M.VERSION = 1

-- the same checks the feature modules use
local is_int = util.is_int
local is_array = util.is_array
local is_object = util.is_object
local absent = util.absent
_M.is_array = is_array

local function string_list(v, what)
    if absent(v) then
        return true
    end
    if not is_array(v) then
        return nil, what .. " must be an array of strings"
    end
    for i = 1, #v do
        if type(v[i]) ~= "string" then
            return nil, what .. "[" .. (i - 1) .. "] must be a string"
        end
    end
    return true
end

local function check_index(ix)
    if absent(ix) then
        return true
    end
    if not is_object(ix) then
        return nil, "index must be an object"
    end
    for _, f in ipairs({ "hosts", "wildcard_hosts", "paths", "prefixes" }) do
        local ok, err = string_list(ix[f], "index." .. f)
        if not ok then
            return nil, err
        end
    end
    if not absent(ix.wildcard_hosts) then
        for i, w in ipairs(ix.wildcard_hosts) do
            if w:sub(1, 2) ~= "*." then
                return nil, "index.wildcard_hosts[" .. (i - 1) .. "] must start with \"*.\": " .. w
            end
        end
    end
    return true
end

local PROTOCOLS = { [""] = true, http = true, https = true, grpc = true, grpcs = true }

local function check_rule(r)
    if not is_object(r) then
        return nil, "rule must be an object"
    end
    if type(r.name) ~= "string" then
        return nil, "name must be a string"
    end
    if absent(r.match) then
        return nil, "match is required"
    end
    local f, err = expr.compile(r.match)
    if not f then
        return nil, "match: " .. err
    end
    local ok
    ok, err = check_index(r.index)
    if not ok then
        return nil, err
    end
    if not absent(r.upstream) and type(r.upstream) ~= "string" then
        return nil, "upstream must be a string"
    end
    if not absent(r.backend_protocol) and not PROTOCOLS[r.backend_protocol] then
        return nil, "backend_protocol must be \"\", \"http\", \"https\", \"grpc\" or \"grpcs\", got " .. tostring(r.backend_protocol)
    end
    if not absent(r.config) and not is_object(r.config) then
        return nil, "config must be an object"
    end
    local feats, ferr = features.compile(r.config)
    if feats == nil then
        return nil, ferr
    end
    return true
end

local function check_group(g)
    if not is_object(g) then
        return nil, "must be an object"
    end
    if type(g.name) ~= "string" or g.name == "" then
        return nil, "name must be a non-empty string"
    end
    for _, f in ipairs({ "mode", "session_affinity_policy", "session_affinity_attribute" }) do
        if not absent(g[f]) and type(g[f]) ~= "string" then
            return nil, f .. " must be a string"
        end
    end
    local bs = g.backends
    if absent(bs) then
        return true
    end
    if not is_array(bs) then
        return nil, "backends must be an array"
    end
    for i = 1, #bs do
        local b = bs[i]
        local where = "backends[" .. (i - 1) .. "]"
        if not is_object(b) then
            return nil, where .. " must be an object"
        end
        if type(b.address) ~= "string" or b.address == "" then
            return nil, where .. ".address must be a non-empty string"
        end
        if not (expr.parse_ipv4(b.address) or expr.parse_ipv6(b.address)) then
            return nil, where .. ".address must be an IPv4 or IPv6 address: " .. b.address
        end
        if not is_int(b.port) or b.port < 1 or b.port > 65535 then
            return nil, where .. ".port must be an integer in 1..65535"
        end
        if not is_int(b.weight) or b.weight < 0 then
            return nil, where .. ".weight must be an integer >= 0"
        end
    end
    return true
end

-- certificate map keys: "<port>", "<domain>" or "<domain>/<port>" (domain optionally "*."-prefixed), or "*" (the
-- fallback certificate of DEFAULT_SSL_STRATEGY Always/Both, see alb/ssl.lua)
local function check_cert_key(k)
    if k == "*" then
        return true
    end
    if k:match("^%d+$") then
        local n = tonumber(k)
        return n >= 1 and n <= 65535
    end
    local host, port = k:match("^([^/]+)/(%d+)$")
    if host then
        local n = tonumber(port)
        if n < 1 or n > 65535 then
            return false
        end
    else
        host = k
    end
    local body = host:sub(1, 2) == "*." and host:sub(3) or host
    return body ~= "" and body:match("^[%w%-%.]+$") ~= nil and body:sub(1, 1) ~= "." and body:sub(-1) ~= "."
end

local function check_certificates(certs)
    if absent(certs) then
        return true
    end
    if not is_object(certs) then
        return nil, "certificates must be an object (key -> {cert, key})"
    end
    for k, c in pairs(certs) do
        if not check_cert_key(k) then
            return nil, fmt("certificates: invalid key %q (\"<port>\", \"<domain>\", \"<domain>/<port>\" or \"*\")", k)
        end
        if not is_object(c) then
            return nil, fmt("certificates[%q] must be an object", k)
        end
        if type(c.cert) ~= "string" or not c.cert:find("-----BEGIN ", 1, true) then
            return nil, fmt("certificates[%q].cert must be a PEM string", k)
        end
        if type(c.key) ~= "string" or not c.key:find("-----BEGIN ", 1, true) then
            return nil, fmt("certificates[%q].key must be a PEM string", k)
        end
    end
    return true
end

local function check_port_key(port)
    local pn = tonumber(port)
    if type(port) ~= "string" or not port:match("^%d+$") or pn < 1 or pn > 65535 then
        return nil, "http: invalid port key \"" .. tostring(port) .. "\""
    end
    return true
end

-- rules of one port (a policy's `rules`, or a delta's list where a string is the key of a rule of the base):
-- checks every rule object whose key this worker has not compiled on that port. Returns the number checked.
local function check_rules(port, rules, routes, keys_allowed)
    local known = routes and routes[port]
    known = known and known.compiled
    local n = 0
    for i = 1, #rules do
        local r = rules[i]
        local ok, err = true, nil
        if type(r) == "string" and keys_allowed then
            if r == "" then
                ok, err = nil, "a rule key must not be empty"
            end
        elseif keys_allowed and type(r) == "table" and r[1] ~= nil then
            if not (is_array(r) and #r == 2 and is_int(r[1]) and is_int(r[2]) and r[1] >= 0 and r[2] >= 1) then
                ok, err = nil, "a run of the base's rules must be [first >= 0, count >= 1]"
            end
        else
            local key = type(r) == "table" and r.key
            if not (known and type(key) == "string" and known[key]) then
                ok, err = check_rule(r)
                n = n + 1
            end
        end
        if not ok then
            local name = type(r) == "table" and type(r.name) == "string" and r.name or "?"
            return nil, fmt("port %s rule %d (%q): %s", port, i - 1, name, err)
        end
    end
    return n
end

local function check_groups(groups, what)
    if absent(groups) then
        return true
    end
    if not is_array(groups) then
        return nil, what .. " must be an array"
    end
    local seen = {}
    for i = 1, #groups do
        local ok, err = check_group(groups[i])
        if not ok then
            local name = type(groups[i]) == "table" and type(groups[i].name) == "string" and groups[i].name or "?"
            return nil, fmt("%s[%d] (%q): %s", what, i - 1, name, err)
        end
        if seen[groups[i].name] then
            return nil, fmt("%s[%d]: duplicate group name %q", what, i - 1, groups[i].name)
        end
        seen[groups[i].name] = true
    end
    return true
end

local function check_head(doc)
    if not is_object(doc) or next(doc) == nil then
        return nil, "policy must be a JSON object"
    end
    local v = doc.version
    if v ~= _M.VERSION then
        if absent(v) then
            return nil, "policy version missing"
        end
        return nil, "unsupported policy version " .. (type(v) == "number" and fmt("%.14g", v) or cjson.encode(v))
    end
    if not absent(doc.generation) and not is_int(doc.generation) then
        return nil, "generation must be an integer"
    end
    return true
end

--- validate(doc, routes) -> true, checked or nil, err. `doc` is the decoded JSON; `routes` (optional) what this
--- worker applied (alb/router.lua): a rule whose key it compiled on that port came in a policy that was validated
--- when it was stored, and is byte-identical by contract (docs/policy.md "Rule keys"), so it is not checked again.
--- `checked`: the number of rules checked.
function _M.validate(doc, routes)
    local n_checked = 0
    local ok, err = check_head(doc)
    if not ok then
        return nil, err
    end
    local http = doc.http
    if not absent(http) then
        if not is_object(http) then
            return nil, "http must be an object (port -> {rules})"
        end
        for port, p in pairs(http) do
            ok, err = check_port_key(port)
            if not ok then
                return nil, err
            end
            if not is_object(p) then
                return nil, "http[\"" .. port .. "\"] must be an object"
            end
            local rules = p.rules
            if absent(rules) or not is_array(rules) then
                return nil, "http[\"" .. port .. "\"].rules must be an array"
            end
            local n
            n, err = check_rules(port, rules, routes, false)
            if not n then
                return nil, err
            end
            n_checked = n_checked + n
        end
    end
    ok, err = check_certificates(doc.certificates)
    if not ok then
        return nil, err
    end
    ok, err = check_groups(doc.backend_groups, "backend_groups")
    if not ok then
        return nil, err
    end
    return true, n_checked
end

local function hex40(v)
    return type(v) == "string" and #v == 40 and v:match("^[0-9a-f]+$") ~= nil
end

--- validate_delta(d, routes) -> true, checked or nil, err: the shape of a delta (docs/policy.md "Policy
--- deltas") and every rule object, group and certificate in it. Whether its keys are rules of the base is
--- checked when it is applied to the base (alb/delta.lua).
function _M.validate_delta(d, routes)
    local ok, err = check_head(d)
    if not ok then
        return nil, err
    end
    if not hex40(d.base) then
        return nil, "base must be the 40 hex digits of a sha1"
    end
    if not hex40(d.digest) then
        return nil, "digest must be the 40 hex digits of a sha1"
    end
    for _, f in ipairs({ "http_removed", "backend_groups_removed", "certificates_removed" }) do
        ok, err = string_list(d[f], f)
        if not ok then
            return nil, err
        end
    end
    if not absent(d.http_removed) then
        for i = 1, #d.http_removed do
            ok, err = check_port_key(d.http_removed[i])
            if not ok then
                return nil, err
            end
        end
    end
    local n_checked = 0
    local http = d.http
    if not absent(http) then
        if not is_object(http) then
            return nil, "http must be an object (port -> [rule key or rule, ...])"
        end
        for port, list in pairs(http) do
            ok, err = check_port_key(port)
            if not ok then
                return nil, err
            end
            if not is_array(list) then
                return nil, "http[\"" .. port .. "\"] must be an array of rule keys and rules"
            end
            local n
            n, err = check_rules(port, list, routes, true)
            if not n then
                return nil, err
            end
            n_checked = n_checked + n
        end
    end
    ok, err = check_certificates(d.certificates)
    if not ok then
        return nil, err
    end
    ok, err = check_groups(d.backend_groups, "backend_groups")
    if not ok then
        return nil, err
    end
    return true, n_checked
end

return _M
