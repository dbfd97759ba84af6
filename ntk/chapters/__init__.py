"""The chapters' experiments, one module per notebook (the notebooks call these functions).

`gaussian_processes` (01), `neural_tangent_kernel` (02), `lazy_regime` (03),
`mup_feature_learning` (05), `parametrization_zoo` (06), `coordinate_checks` (07),
`mutransfer` (08); `_cli` is the command line the scripts share, `_plots` the shared plots.
"""
