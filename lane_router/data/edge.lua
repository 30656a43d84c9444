-- traffic-lanes edge: remove every lane a client chose by itself, before jwt_authn runs.
--
-- docs/design.md, "The edge": every routing-header field line (default "x-lane") is removed and
-- every "<key>=..." member (default key "lane", whatever its value) is removed from every
-- "baggage" field line; the other members keep their bytes, a line left empty is dropped.
-- The lane token is a credential: every "lane_token" pair is removed from every "cookie" line
-- the same way (";" between pairs), and when no "x-lane-token" line carries a token, the first
-- "lane_token" cookie's value (quotes trimmed) becomes the "x-lane-token" header, which is all
-- jwt_authn reads. jwt_authn then writes the routing header from a verified lane token
-- (claim_to_headers) and the next filter drops "x-lane-token": the token never goes upstream.
--
-- lane_router's Envoy renderer prepends `local LANES_HEADER, LANES_BAGGAGE_KEY = "...", "..."`
-- from the topology; used on its own this file falls back to the defaults below.

local HEADER = LANES_HEADER or "x-lane"
local KEY = LANES_BAGGAGE_KEY or "lane"
local TOKEN_HEADER, COOKIE = "x-lane-token", "lane_token"

local find, sub, gsub = string.find, string.sub, string.gsub

local function trim(s)
  return (gsub(gsub(s, "^[ \t]+", ""), "[ \t]+$", ""))
end

-- The line without its `key` members (separated by `sep`), or nil when nothing is left;
-- `changed` tells whether any member was removed.
local function strip(line, key, sep)
  if not find(line, key, 1, true) then
    return line, false
  end
  local kept, changed, start = {}, false, 1
  while true do
    local comma = find(line, sep, start, true)
    local member = comma and sub(line, start, comma - 1) or sub(line, start)
    local eq = find(member, "=", 1, true)
    local name = trim(eq and sub(member, 1, eq - 1) or member)
    if name == key then
      changed = true
    else
      kept[#kept + 1] = member
    end
    if not comma then
      break
    end
    start = comma + 1
  end
  if not changed then
    return line, false
  end
  local out = trim(table.concat(kept, sep))
  if out == "" then
    return nil, true
  end
  return out, true
end

-- Rewrite every `name` line through strip(); `changed` tells whether any line changed.
local function rewrite(headers, name, key, sep)
  local count = headers:getNumValues(name)
  if count == 0 then
    return {}, false
  end
  local originals, lines, changed = {}, {}, false
  for i = 0, count - 1 do
    local original = headers:getAtIndex(name, i) or ""
    originals[#originals + 1] = original
    local line, removed = strip(original, key, sep)
    changed = changed or removed
    if line then
      lines[#lines + 1] = line
    end
  end
  if changed then
    headers:remove(name)
    for _, line in ipairs(lines) do
      headers:add(name, line)
    end
  end
  return originals, changed
end

-- The value of the first COOKIE pair over the cookie lines (name compared trimmed, value
-- trimmed of spaces then quotes; nil if there is none or it is empty), as the sidecar's
-- take_cookie() reads it.
local function cookie_token(lines)
  for _, line in ipairs(lines) do
    if find(line, COOKIE, 1, true) then
      local start = 1
      while true do
        local semi = find(line, ";", start, true)
        local pair = semi and sub(line, start, semi - 1) or sub(line, start)
        local eq = find(pair, "=", 1, true)
        if trim(eq and sub(pair, 1, eq - 1) or pair) == COOKIE then
          local value = gsub(gsub(trim(eq and sub(pair, eq + 1) or ""), '^"+', ""), '"+$', "")
          if value == "" then
            return nil
          end
          return value
        end
        if not semi then
          break
        end
        start = semi + 1
      end
    end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:getNumValues(HEADER) > 0 then
    headers:remove(HEADER)
  end
  rewrite(headers, "baggage", KEY, ",")
  local cookies, changed = rewrite(headers, "cookie", COOKIE, ";")
  if not changed then
    return
  end
  for i = 0, headers:getNumValues(TOKEN_HEADER) - 1 do
    if trim(headers:getAtIndex(TOKEN_HEADER, i) or "") ~= "" then
      return -- the header carries the token: it wins over the cookie
    end
  end
  local token = cookie_token(cookies)
  if token then
    headers:replace(TOKEN_HEADER, token)
  end
end
