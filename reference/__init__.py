"""The reference GWLB appliance: a correct, fast, gwlbtun-compatible GENEVE tunnel handler."""
