"""Independent implementations of classic CNNs for ``repro.verify``'s tests.

Each file holds one network written from its paper with its own module names, its own
definition order and its own branch order (shortcuts computed first), so that nothing but the
dataflow can pair it with the timm / torchvision model. Constructor flags switch on one classic
mistake each; every flag's default is the correct network.
"""
