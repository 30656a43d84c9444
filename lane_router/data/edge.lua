-- traffic-lanes edge: remove every lane a client chose by itself, before jwt_authn runs.
--
-- docs/design.md, "The edge": every routing-header field line (default "x-lane") is removed and
-- every "<key>=..." member (default key "lane", whatever its value) is removed from every
-- "baggage" field line; the other members keep their bytes, a line left empty is dropped.
-- jwt_authn then writes the routing header from a verified lane token (claim_to_headers).
--
-- lane_router's Envoy renderer prepends `local LANES_HEADER, LANES_BAGGAGE_KEY = "...", "..."`
-- from the topology; used on its own this file falls back to the defaults below.

local HEADER = LANES_HEADER or "x-lane"
local KEY = LANES_BAGGAGE_KEY or "lane"

local find, sub, gsub = string.find, string.sub, string.gsub

local function trim(s)
  return (gsub(gsub(s, "^[ \t]+", ""), "[ \t]+$", ""))
end

-- The line without its KEY members, or nil when nothing is left; `changed` tells whether any
-- member was removed.
local function strip(line)
  if not find(line, KEY, 1, true) then
    return line, false
  end
  local kept, changed, start = {}, false, 1
  while true do
    local comma = find(line, ",", start, true)
    local member = comma and sub(line, start, comma - 1) or sub(line, start)
    local eq = find(member, "=", 1, true)
    local name = trim(eq and sub(member, 1, eq - 1) or member)
    if name == KEY then
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
  local out = trim(table.concat(kept, ","))
  if out == "" then
    return nil, true
  end
  return out, true
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:getNumValues(HEADER) > 0 then
    headers:remove(HEADER)
  end
  local count = headers:getNumValues("baggage")
  if count == 0 then
    return
  end
  local lines, changed = {}, false
  for i = 0, count - 1 do
    local line, removed = strip(headers:getAtIndex("baggage", i) or "")
    changed = changed or removed
    if line then
      lines[#lines + 1] = line
    end
  end
  if changed then
    headers:remove("baggage")
    for _, line in ipairs(lines) do
      headers:add("baggage", line)
    end
  end
end
