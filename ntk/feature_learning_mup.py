"""Chapter 05 as a script: `python -m ntk.chapters.mup_feature_learning` under its old name.

Kept as an alias because the README and issues cite it; the code (and `--help`) is in
`ntk.chapters.mup_feature_learning`.
"""

if __name__ == "__main__":
    import sys
    from pathlib import Path

    # Python put ntk/ first on sys.path, where the package's module names (kernels, models,
    # training, ...) could shadow installed packages: import from the repository root instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    from ntk.chapters._cli import run
    from ntk.chapters.mup_feature_learning import main

    run(main)
