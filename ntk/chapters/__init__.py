"""The chapters' experiments, one module per notebook (the notebooks call these functions).

`gaussian_processes` (01), `neural_tangent_kernel` (02), `lazy_regime` (03), `lazy_to_rich`
(04), `mup_feature_learning` (05), `parametrization_zoo` (06), `coordinate_checks` (07),
`mutransfer` (08), `mup_transformer` (09), `progressive_ema` (10), `dynamic_learning_rates`
(11), `depth` (12), `conv_kernels` (16); `_cli` is the command line the scripts share,
`_plots` the shared plots.
"""
