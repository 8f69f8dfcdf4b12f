"""DataFrame helpers and plots for notebooks (pandas, matplotlib), imported on use."""
