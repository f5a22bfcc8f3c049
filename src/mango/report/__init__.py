"""mango.report"""
