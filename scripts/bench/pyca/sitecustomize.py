"""Makes a bench peer trust only the bench's throwaway CA (scripts/bench-hubspot.sh).

On PYTHONPATH with SLUICE_BENCH_CA set: certifi's bundle becomes that CA, so `requests` verifies
the loopback proxy's api.hubapi.com certificate even where a connector sends prepared requests
itself (`Session.send`, which ignores REQUESTS_CA_BUNDLE), and no other certificate verifies.
"""

import os

_ca = os.environ.get("SLUICE_BENCH_CA")
if _ca:
    try:
        import certifi

        certifi.where = lambda: _ca
    except ImportError:
        pass
