"""``edgevlm bench``: measure a bundle on each of its backends, one subprocess per backend.

- :mod:`.schema`: the result rows and the ``results.json`` document (``schema_version``);
- :mod:`.worker`: ``python -m edgevlm.bench.worker`` measures one backend and prints its rows;
- :mod:`.probe`: the memory-bandwidth probe decode bandwidth is compared with;
- :mod:`.report`: the table, CSV, and the HTML report with its plots;
- :mod:`.device`: a phone over adb (the aarch64 ``edgevlm-bench`` binary);
- :mod:`.runner`: runs the workers and puts the document together.
"""
