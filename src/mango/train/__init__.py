"""mango.train"""
