"""The CeleryExecutor deployment: docker-compose.yaml checks and the same stack run natively."""
