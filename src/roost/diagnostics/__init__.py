"""Device diagnostics: archives a device uploads (logs, status) for operators to download.

A device (the agent's ``diagnostics`` command) POSTs a tar.gz to ``/api/v1/device/diagnostics``;
the bytes stream into the blob store (:mod:`roost.ota.blobs`), a row per archive keeps its size,
SHA-256 and note; operators list, download and delete a device's archives. Each device keeps its
newest :data:`~roost.diagnostics.service.KEEP_PER_DEVICE` archives.
"""
