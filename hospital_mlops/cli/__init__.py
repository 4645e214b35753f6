"""The command line and the demo: the one face of the library that may import the doors
(``serving/``, ``pipelines/``, ``components/``, kfp and kserve). ``hmlops`` is ``main.main``."""
