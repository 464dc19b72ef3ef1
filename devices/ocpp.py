"""What swapfleet adds to OCPP 2.1, shared by the gateway (app/ocpp) and the stations that
speak to it (simulators/ocpp_station.py): both sides of the contract read it here.

OCPP's extension point is `customData`, an object with a `vendorId` on every type. swapfleet
reads two things there (docs/ocpp.md, "swapfleet's customData"):
- a meterValue's pack temperatures, `tempCMin` and `tempCMax` (°C): OCPP 2.1 dropped the
  Temperature measurand, and a charging sample needs both;
- a BatterySwap's `timestamp`: when the event happened at the station (OCPP's BatterySwap
  has no time; without it the CSMS takes the time it received the event). A station sends
  it for events it queued while offline, and the fleet simulator for simulated time.
"""

VENDOR_ID = "org.swapfleet"
