"""One module per StyleGAN2 checkpoint format (GenForce, rosinality, NVIDIA pickle) and what they
share; :mod:`anon.nets.stylegan2_loaders` detects the format and builds the generator."""
