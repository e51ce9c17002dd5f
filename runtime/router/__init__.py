"""The router: a cache-aware load balancer in front of several servers (`python -m sgl.router`)."""
