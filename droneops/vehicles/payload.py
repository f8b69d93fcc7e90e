"""The payload-mass parameter: how a vehicle asks flight control what it carries.

A vehicle that cannot weigh its load itself (the droneops simulated vehicle carries only the mass
it is told about) declares the float parameter :data:`PAYLOAD_MASS_PARAM` (kg, >= 0). Flight
control probes that parameter once per connection (:func:`has_payload_param`) and, where it
exists, sets it to the flight's take-off payload before arming (:func:`set_payload_mass`), so
that the flown energy matches the plan. A vehicle without the parameter (PX4: the parcel is real)
answers the probe with an error or a MAVSDK timeout, which reads "no payload parameter"; nothing
is set there.

Pure names plus two small MAVSDK calls (imported lazily); nothing here knows which vehicle
declares the parameter.
"""

from __future__ import annotations

from typing import Any

PAYLOAD_MASS_PARAM = "SIM_PAYLOAD_KG"
"""Float parameter (kg): the payload mass on board; set before arming, a DO_GRIPPER release sets it to 0."""


async def has_payload_param(system: Any) -> bool:
    """Whether the vehicle behind MAVSDK ``system`` has :data:`PAYLOAD_MASS_PARAM` (a float).

    Any parameter error (no such parameter, wrong type, MAVSDK's timeout on an autopilot that
    does not answer for names it lacks) reads False. Bounded by MAVSDK's own parameter timeout;
    do not cancel it mid-call (the MAVSDK call runs in an executor thread on the plugin).
    """
    from mavsdk.asyncio.plugins.param import ParamAsync
    from mavsdk.plugins.param import ParamError

    plugin = ParamAsync(system)
    try:
        await plugin.get_param_float(PAYLOAD_MASS_PARAM)
        return True
    except ParamError:
        return False
    finally:
        plugin.destroy()


async def set_payload_mass(system: Any, payload_kg: float) -> str | None:
    """Set :data:`PAYLOAD_MASS_PARAM` to ``payload_kg`` (kg); None on success, else MAVSDK's result name."""
    from mavsdk.asyncio.plugins.param import ParamAsync
    from mavsdk.plugins.param import ParamError

    plugin = ParamAsync(system)
    try:
        await plugin.set_param_float(PAYLOAD_MASS_PARAM, float(payload_kg))
        return None
    except ParamError as exc:
        return str(exc.result.name)
    finally:
        plugin.destroy()
