"""Speed-only twins of reference code paths. Each module names the reference it replaces and
the test that holds the two equal; change one, change both.

    log_weights.py  L_K's importance log weights (batch norm folded into the dense layers, fused
                    heads, Box-Muller noise under XLA); reference: HierarchicalVAE.log_weights;
                    guarded by tests/test_performance_paths.py
    step_loop.py    several train steps per XLA call in one while loop; reference: Keras'
                    one-step train function; guarded by tests/test_step_loop.py
"""
