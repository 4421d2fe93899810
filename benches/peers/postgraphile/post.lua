-- wrk script: POST one GraphQL request body, with a bearer token, on every request.
--   wrk -t2 -c32 -d10s --latency -s post.lua http://127.0.0.1:PORT/graphql -- BODY.json TOKEN
-- BODY.json is the JSON request ({"query": ..., "variables": ...}); TOKEN the JWT (may be "").
-- At the end it prints "graphql errors: N of M" (N = non-200 answers or bodies with "errors"),
-- so that fast failures are not mistaken for throughput.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path, token = args[1], args[2]
  local file = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  failures = 0
  responses = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 or string.find(body, '"errors"', 1, true) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed, total = 0, 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failures")
    total = total + thread:get("responses")
  end
  io.write(string.format("graphql errors: %d of %d\n", failed, total))
end
