"""recbole-mamba's RecBole models; import them through :func:`recbole_mamba.get_model`."""
