"""Train and test any RecBole model, recbole-mamba's included, with RecBole's flags:

    python run_recbole.py --model=BiMamba4Rec --dataset=ml-1m [--config_files=...] [--key=value ...]

Works from any directory, installed or not.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from recbole_mamba.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
