"""Analysis of trained models: the paper's figures, the analyze report and the reproduction
grid."""
