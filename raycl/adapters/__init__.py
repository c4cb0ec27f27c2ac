"""The private parts of Ray and Optuna that raycl relies on, one module per library, each part behind one
function that names the public API it stands in for. The bottom layer: nothing here imports raycl.
tests/unit/test_adapters.py fails when an upgrade of the pinned versions changes one of them."""
