"""mango.models"""
