-- Policy deltas (docs/policy.md "Policy deltas"): patch a decoded policy with a decoded delta.
--
-- patch(doc, d, touched) returns a new policy table that shares every unchanged part with `doc` (port rule
-- lists, rule tables, groups, certificates): `doc` itself is never modified, so the routes built from it stay
-- valid. `touched` (optional) collects what changed, for the worker to rebuild only that:
--   touched.groups[name] = true   a group added, changed or removed
--   touched.certs = true          certificates changed
local type = type
local pairs = pairs
local next = next
local fmt = string.format
local sort = table.sort

local _M = {}

local function port_keys(p)
    local bykey = {}
    local rules = p and p.rules
    if type(rules) ~= "table" then
        return bykey
    end
    for i = 1, #rules do
        local k = rules[i].key
        if type(k) == "string" and k ~= "" and bykey[k] == nil then
            bykey[k] = rules[i]
        end
    end
    return bykey
end

local function patch_http(old, d)
    local http = {}
    for port, p in pairs(old or {}) do
        http[port] = p
    end
    local removed = d.http_removed
    if type(removed) == "table" then
        for i = 1, #removed do
            http[removed[i]] = nil
        end
    end
    if type(d.http) ~= "table" then
        return http
    end
    for port, list in pairs(d.http) do
        local base = old and old[port]
        base = base and base.rules or {}
        local bykey -- built on the first key item (runs need no lookup)
        local rules, n = {}, 0
        for i = 1, #list do
            local item = list[i]
            if type(item) == "string" then
                bykey = bykey or port_keys(old and old[port])
                local r = bykey[item]
                if not r then
                    return nil, fmt("http[%q][%d]: key %s is not a rule of the base policy on port %s", port, i - 1,
                        item, port)
                end
                n = n + 1
                rules[n] = r
            elseif type(item[1]) == "number" then -- [first, count] of the base's rules, 0-based
                local first, count = item[1], item[2]
                if first + count > #base then
                    return nil, fmt("http[%q][%d]: run [%d, %d] is not within the base policy's %d rules on port %s",
                        port, i - 1, first, count, #base, port)
                end
                for j = first + 1, first + count do
                    n = n + 1
                    rules[n] = base[j]
                end
            else
                n = n + 1
                rules[n] = item
            end
        end
        http[port] = { rules = rules }
    end
    return http
end

local function by_name(a, b)
    return a.name < b.name
end

local function patch_groups(old, d, touched)
    old = type(old) == "table" and old or {}
    local changed = type(d.backend_groups) == "table" and d.backend_groups or {}
    local removed = type(d.backend_groups_removed) == "table" and d.backend_groups_removed or {}
    if #changed == 0 and #removed == 0 then
        return old
    end
    local gone, repl = {}, {}
    for i = 1, #removed do
        gone[removed[i]] = true
        touched[removed[i]] = true
    end
    for i = 1, #changed do
        repl[changed[i].name] = changed[i]
        touched[changed[i].name] = true
    end
    local kept = {}
    for i = 1, #old do
        local g = old[i]
        local name = g.name
        if not gone[name] then
            local n = repl[name]
            if n then
                repl[name] = nil
                g = n
            end
            kept[#kept + 1] = g
        end
    end
    local added = {}
    for i = 1, #changed do
        local g = changed[i]
        if repl[g.name] then -- not in the base: a new group
            added[#added + 1] = g
        end
    end
    if #added == 0 then
        return kept
    end
    -- the base's groups are sorted by name (a policy's always are): merge the few new ones in, instead of
    -- sorting 10,000 groups with a Lua comparator for every delta that adds one
    sort(added, by_name)
    local out, a, k, na, nk = {}, 1, 1, #added, #kept
    for i = 1, na + nk do
        local ga, gk = added[a], kept[k]
        if ga and (not gk or ga.name < gk.name) then
            out[i] = ga
            a = a + 1
        else
            out[i] = gk
            k = k + 1
        end
    end
    return out
end

local function patch_certs(old, d, touched)
    local changed = type(d.certificates) == "table" and d.certificates or nil
    local removed = type(d.certificates_removed) == "table" and d.certificates_removed or nil
    if (not changed or next(changed) == nil) and (not removed or #removed == 0) then
        return old
    end
    touched.certs = true
    local out = {}
    for k, c in pairs(type(old) == "table" and old or {}) do
        out[k] = c
    end
    for i = 1, removed and #removed or 0 do
        out[removed[i]] = nil
    end
    for k, c in pairs(changed or {}) do
        out[k] = c
    end
    return out
end

--- patch(doc, d, touched) -> new doc, or nil and the reason
function _M.patch(doc, d, touched)
    touched = touched or {}
    touched.groups = touched.groups or {}
    local http, err = patch_http(doc.http, d)
    if not http then
        return nil, err
    end
    return {
        version = d.version,
        generation = d.generation,
        http = http,
        backend_groups = patch_groups(doc.backend_groups, d, touched.groups),
        certificates = patch_certs(doc.certificates, d, touched),
    }
end

return _M
