"""The job: what a user asked for, checked and planned, before any model work.

``spec`` (the JobSpec schema, OmegaConf merge, validation naming every field), ``schedule``
(Deforum's keyframe grammar, evaluated per frame) and ``plan`` (clips cut into chains, the
job_id). It imports no torch and no Ray, and reads nothing but the spec files it is given, so
``deforum-ray validate`` and ``plan`` answer in well under a second. Only ``errors`` and
``table`` sit below it.
"""
