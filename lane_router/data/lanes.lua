-- traffic-lanes: put the request's lane in the routing header before Envoy picks a route.
--
-- design.md's extract order, exactly as lanes_sdk.wire.lane_from_headers applies it:
--   1. the first routing-header field line (default "x-lane") holding a valid lane name;
--   2. else the first valid "<key>=<lane>" member (default key "lane") over every "baggage"
--      field line, in order: any position, optional spaces around "=", ";properties" ignored,
--      %XX decoded;
--   3. else no lane.
-- A valid lane is an RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters,
-- surrounding spaces/tabs ignored; anything else is no lane (never an error).
-- The routing header is then rewritten to hold exactly that lane (so the routes are plain exact
-- matches and the next hop sees the lane even when it came from baggage), or removed when there
-- is none (an invalid value is never forwarded). The route cache is cleared only when the
-- header changed.
--
-- lane_router's Envoy renderer prepends `local LANES_HEADER, LANES_BAGGAGE_KEY = "...", "..."`
-- from the topology; used on its own this file falls back to the defaults below.

local HEADER = LANES_HEADER or "x-lane"
local KEY = LANES_BAGGAGE_KEY or "lane"
local KEY_LEN = #KEY
local MAX_RAW = 79 -- 63 + 16: longer raw values are rejected before trimming, as in lanes_sdk

local byte, find, sub, gsub, char = string.byte, string.find, string.sub, string.gsub, string.char

local function valid(value)
  if value == nil or #value > MAX_RAW then
    return nil
  end
  local _, last = find(value, "^[ \t]*")
  local s = last + 1
  local e = #value
  while e >= s do
    local b = byte(value, e)
    if b ~= 32 and b ~= 9 then
      break
    end
    e = e - 1
  end
  local n = e - s + 1
  if n < 1 or n > 63 then
    return nil
  end
  local lane = sub(value, s, e)
  if find(lane, "[^a-z0-9-]") or byte(lane, 1) == 45 or byte(lane, n) == 45 then
    return nil
  end
  return lane
end

local function unhex(h)
  return char(tonumber(h, 16))
end

-- The value of the member whose value starts at index `start` (just after "=").
local function member_value(line, start)
  local comma = find(line, ",", start, true)
  local raw = comma and sub(line, start, comma - 1) or sub(line, start)
  local semi = find(raw, ";", 1, true)
  if semi then
    raw = sub(raw, 1, semi - 1)
  end
  if find(raw, "%", 1, true) then
    raw = gsub(raw, "%%(%x%x)", unhex)
  end
  return valid(raw)
end

-- The first valid KEY member of one baggage field line.
local function scan(line)
  local n = #line
  local pos = find(line, KEY, 1, true)
  while pos do
    local before = pos - 1
    while before >= 1 and (byte(line, before) == 32 or byte(line, before) == 9) do
      before = before - 1
    end
    if before < 1 or byte(line, before) == 44 then -- start of the line or after ","
      local after = pos + KEY_LEN
      while after <= n and (byte(line, after) == 32 or byte(line, after) == 9) do
        after = after + 1
      end
      if after <= n and byte(line, after) == 61 then -- "="
        local lane = member_value(line, after + 1)
        if lane then
          return lane
        end
      end
    end
    pos = find(line, KEY, pos + 1, true)
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local count = headers:getNumValues(HEADER)
  local lane = nil
  for i = 0, count - 1 do
    lane = valid(headers:getAtIndex(HEADER, i))
    if lane then
      break
    end
  end
  if lane == nil then
    for i = 0, headers:getNumValues("baggage") - 1 do
      local line = headers:getAtIndex("baggage", i)
      if line and find(line, KEY, 1, true) then
        lane = scan(line)
        if lane then
          break
        end
      end
    end
  end
  if lane then
    if count ~= 1 or headers:getAtIndex(HEADER, 0) ~= lane then
      headers:replace(HEADER, lane)
      handle:clearRouteCache()
    end
  elseif count > 0 then
    headers:remove(HEADER)
    handle:clearRouteCache()
  end
end
