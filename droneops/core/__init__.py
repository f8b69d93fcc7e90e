"""The pure core: geodesy, the network model, energy, vehicle profiles, the planner and missions.

Nothing in this package does I/O or uses asyncio; the edges (formats, vehicles, fleet, sim,
dashboard, cli) call into it.
"""
