"""The command-line programs: each module has ``build_parser()`` (where it has options of
its own), ``main(argv=None)`` and ``console_main()``, the installed command
(``graphlstm-train`` etc.); ``scripts/*.py`` call the same ``console_main``."""
