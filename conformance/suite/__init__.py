"""The conformance suite's tests, one module per area. Run through ``gwlb-conformance`` or
``pytest --gwlb-conformance`` / ``pytest --gwlb-appliance 'CMD'``."""
