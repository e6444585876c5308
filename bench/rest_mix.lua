-- rest_mix.lua: wrk's requests for bench/run's REST-shaped mix on bench/rest_app, in turn over
-- its 25 resources under /api/v1: four GETs of one item (a small JSON object answered) for every
-- POST of a small JSON object (parsed, answered back with 201).
local n = 0
local body = '{"name":"widget","qty":3,"tags":["a","b"],"price":12.5}'
local json = { ["Content-Type"] = "application/json" }

request = function()
  n = n + 1
  local r = n % 25
  if n % 5 == 0 then
    return wrk.format("POST", "/api/v1/res" .. r, json, body)
  end
  return wrk.format("GET", "/api/v1/res" .. r .. "/" .. n)
end
