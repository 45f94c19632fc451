"""Benchmarks behind ``text4d bench ...``; each module's ``run(...)`` returns a JSON-able dict."""
