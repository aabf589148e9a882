from pipeline.docs import reference
from tests.conftest import ROOT


def test_readme_config_reference_is_generated_from_the_models():
    readme = (ROOT / "README.md").read_text()
    assert reference() in readme, "README is stale: run python -m pipeline.docs --write"
