"""ecomrec components: the pure, typed logic behind every pipeline step.

Each sub-package is one step of the flow in ARCHITECTURE.md. A step's ``step.py`` holds a thin
``main(argv)`` that parses paths and parameters and calls the functions of its package.
"""
