-- Per-worker balancers, one per backend group (docs/policy.md "BackendGroup", dataplane.md §4.11).
--
-- Smooth weighted round robin (nginx style): each pick adds every node's weight to its current value, takes
-- the node with the highest current value and subtracts the total weight from it. Zero-weight nodes are never
-- chosen unless every node has weight 0 (then all count as 1). Each (re)build starts at a random node. A group
-- whose content (node map + algorithm) did not change keeps its balancer object, hence its state, across
-- policies.
local affinity = require("alb.features.affinity")

local type = type
local pairs = pairs
local tostring = tostring
local find = string.find
local concat = table.concat
local sort = table.sort
local random = math.random
local huge = math.huge

local _M = {}

local function signature(g, keys, nodes)
    local parts = { tostring(g.session_affinity_policy or ""), tostring(g.session_affinity_attribute or "") }
    for i = 1, #keys do
        parts[#parts + 1] = keys[i] .. "=" .. nodes[keys[i]].weight
    end
    return concat(parts, ",")
end

local function new_balancer(name, g, keys, nodes, sig)
    -- eligible nodes
    local elig = {}
    for i = 1, #keys do
        local nd = nodes[keys[i]]
        if nd.weight > 0 then
            elig[#elig + 1] = { addr = nd.addr, port = nd.port, weight = nd.weight }
        end
    end
    if #elig == 0 then
        for i = 1, #keys do
            local nd = nodes[keys[i]]
            elig[#elig + 1] = { addr = nd.addr, port = nd.port, weight = 1 }
        end
    end
    local n = #elig
    local b = { name = name, sig = sig, n = n, hosts = {}, ports = {}, weights = {}, cur = {}, total = 0,
        peers = {} }
    local off = n > 0 and random(0, n - 1) or 0
    for j = 1, n do
        local nd = elig[(j - 1 + off) % n + 1]
        local host = nd.addr
        b.hosts[j] = find(host, ":", 1, true) and ("[" .. host .. "]") or host
        b.ports[j] = nd.port
        b.weights[j] = nd.weight
        b.cur[j] = 0
        b.total = b.total + nd.weight
        b.peers[j] = b.hosts[j] .. ":" .. nd.port
    end
    -- session affinity (consistent hash ring), nil for round robin
    b.affinity = affinity.build(b, g.session_affinity_policy, g.session_affinity_attribute)
    return b
end

-- one group's balancer: `prev` (the group's balancer before) when the content did not change
local function build_one(name, g, prev)
    local nodes, keys = {}, {}
    local bs = type(g.backends) == "table" and g.backends or {}
    for _, be in ipairs(bs) do
        local key = be.address .. "|" .. be.port
        if not nodes[key] then
            keys[#keys + 1] = key
        end
        nodes[key] = { addr = be.address, port = be.port, weight = be.weight }
    end
    sort(keys)
    local sig = signature(g, keys, nodes)
    if prev and prev.sig == sig then
        return prev
    end
    return new_balancer(name, g, keys, nodes, sig)
end

--- build(groups_json, old, touched) -> map name -> balancer; reuses the objects of `old` whose content is
--- unchanged. `touched` (optional, a policy delta was applied): the set of group names that changed; any other
--- group of `old` is reused as is, without comparing its content.
function _M.build(groups, old, touched)
    old = old or {}
    local out = {}
    if type(groups) ~= "table" then
        return out
    end
    for _, g in ipairs(groups) do
        local name = g.name
        local prev = old[name]
        if touched and prev and not touched[name] then
            out[name] = prev
        else
            out[name] = build_one(name, g, prev)
        end
    end
    return out
end

--- pick(b) -> node index (1..b.n)
local function pick(b)
    local n = b.n
    if n == 1 then
        return 1
    end
    local cur, w = b.cur, b.weights
    local best, bi = -huge, 1
    for i = 1, n do
        local c = cur[i] + w[i]
        cur[i] = c
        if c > best then
            best, bi = c, i
        end
    end
    cur[bi] = cur[bi] - b.total
    return bi
end
_M.pick = pick

--- pick_untried(b, tried) -> node index not in `tried` (a set), or any node when all were tried.
-- One weighted pick; when that node was already tried, the next untried node after it.
function _M.pick_untried(b, tried)
    local n = b.n
    local i = pick(b)
    for _ = 1, n do
        if not tried[i] then
            return i
        end
        i = i % n + 1
    end
    return i
end

return _M
