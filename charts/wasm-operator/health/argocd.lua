-- Argo CD health check for wasm-operator.dev/WasmPlugin. It reads the kstatus conditions the controller
-- writes: Ready is always present; Reconciling and Stalled only while True; status.observedGeneration only
-- once a generation is fully handled. Install it as resource.customizations.health.wasm-operator.dev_WasmPlugin.
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to handle generation " .. tostring(generation)
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true"
  local ready = condition(obj.status.conditions, "Ready")
  if ready ~= nil and ready.message ~= nil then
    hs.message = hs.message .. ": " .. ready.message
  end
  return hs
end

local stalled = condition(obj.status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

local reconciling = condition(obj.status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = (reconciling.reason or "Reconciling") .. ": " .. (reconciling.message or "")
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end
-- Ready False with neither Reconciling nor Stalled is read as kstatus reads it: still in progress.
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
if ready ~= nil then
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs
