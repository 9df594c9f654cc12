"""Software delivery (issue 14): artifacts, signed staged deployments, DDI, APT repositories.

Sub-packages: :mod:`~roost.ota.blobs` (the blob store port), :mod:`~roost.ota.artifacts`
(uploads, signing, downloads), :mod:`~roost.ota.deployments` (phased rollouts built on jobs),
:mod:`~roost.ota.ddi` (the hawkBit Direct Device Integration API) and :mod:`~roost.ota.apt`
(authenticated APT repositories).
"""
