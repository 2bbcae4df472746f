"""Pictures and tables made from run directories (training curves, confusion matrices, study reports)."""
