import sys
from pathlib import Path

# pipeline_support.py lives one level up, beside the top-level tests.
sys.path.insert(0, str(Path(__file__).parent.parent))
