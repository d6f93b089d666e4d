"""The framework-free training loop and what it needs: data, sharding, schedules, metrics."""
