"""The simulated vehicle: a PX4-like model behind MAVSDK's server plugins, and sharded fleets of them."""
