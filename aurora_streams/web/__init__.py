"""HTTP views on the Faust web server (aiohttp)."""
