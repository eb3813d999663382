-- config.rewrite (dataplane.md §4.6): prefix replacement, or the first match of a regex replaced by a target
-- with $1..$9 (ngx.re.sub, "jo": compiled once, cached by nginx).
local u = require("alb.features.util")

local ngx = ngx
local ngx_var = ngx.var
local re_sub = ngx.re.sub
local re_find = ngx.re.find
local set_uri = ngx.req.set_uri

local _M = {}

function _M.compile(r, path)
    if not u.is_object(r) then
        u.fail(path, "must be an object")
    end
    local prefix = u.opt_string(r.prefix_match, path .. ".prefix_match")
    if prefix and prefix ~= "" then
        return { prefix = prefix, replace = u.opt_string(r.replace_prefix, path .. ".replace_prefix") or "" }
    end
    local target = u.opt_string(r.target, path .. ".target")
    if not target or target == "" then
        return nil
    end
    local regex = u.opt_string(r.regex, path .. ".regex")
    if not regex or regex == "" then
        regex = "/"
    end
    if regex == ".*" then
        return { whole = target }
    end
    local _, _, err = re_find("", regex, "jo")
    if err then
        u.fail(path .. ".regex", "is not a valid regex: " .. err)
    end
    -- nginx's replacement syntax: $1 or ${1}; a "$" not followed by a digit or "{" must be "$$"
    local _, _, serr = re_sub("", "^", target, "jo")
    if serr then
        u.fail(path .. ".target", "is not a valid replacement: " .. serr)
    end
    return { regex = regex, target = target }
end

function _M.run(rw)
    local uri = ngx_var.uri
    local new
    if rw.prefix then
        new = u.replace_prefix(uri, rw.prefix, rw.replace)
    elseif rw.whole then
        new = rw.whole
    else
        local res, n = re_sub(uri, rw.regex, rw.target, "jo")
        if not res or n == 0 then
            return
        end
        new = res
    end
    if new ~= uri then
        if new == "" then
            new = "/"
        end
        set_uri(new, false)
    end
end

return _M
