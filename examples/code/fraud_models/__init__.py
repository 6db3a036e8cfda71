"""Model code for the example fraud specs: a residual network (``residual:build``) and a
training function of its own (``fit:fit``). See the README's "Your own model"."""
